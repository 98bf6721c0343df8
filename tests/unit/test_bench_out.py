"""A benchmark writes only into a new or empty directory or its own earlier output: never over a
run directory's summary or a user's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.bench.out_dir import MARKER, bench_out_dir
from steper_ray.cli import main
from steper_ray.errors import UserError


def test_other_data_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"command": "pipeline"}))
    assert main(["bench", "index", "--out", str(run), f"run_dir={tmp_path / 'r'}"]) == 2
    assert "holds other data (summary.json), not the index benchmark's results" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text()) == {"command": "pipeline"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written, no log either

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(UserError, match=r"holds other data \(keep.txt\)"):
        bench_out_dir(mine, "training", None)
    # another benchmark's results are not this one's to overwrite
    serving = tmp_path / "serving"
    (serving / "model").mkdir(parents=True)
    (serving / "summary.json").write_text(json.dumps({"command": "bench serving"}))
    with pytest.raises(UserError, match="holds other data"):
        bench_out_dir(serving, "training", None)
    assert bench_out_dir(serving, "serving", None) == serving


def test_new_empty_own_and_interrupted_directories_are_accepted(tmp_path: Path) -> None:
    assert bench_out_dir(tmp_path / "a" / "b", "index", None).is_dir()
    done = tmp_path / "done"
    (done / "model").mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"benchmark": "training"}))
    assert bench_out_dir(done, "training", None) == done
    assert (done / MARKER).read_text() == "training\n"
    cut = tmp_path / "cut"  # a run stopped before its summary: its marker, what it wrote, and its scratch
    (cut / "model").mkdir(parents=True)
    (cut / "examples.parquet").write_text("")
    (cut / ".bench-index-x1").mkdir()
    (cut / MARKER).write_text("training\n")
    assert bench_out_dir(cut, "training", None) == cut
    with pytest.raises(UserError, match="holds other data"):
        bench_out_dir(cut, "serving", None)  # examples.parquet is not the serving benchmark's


def test_entries_named_like_a_benchmarks_are_not_its_own_without_its_marker(tmp_path: Path) -> None:
    user = tmp_path / "user"  # a user's index and model, the names the serving benchmark writes
    (user / "index").mkdir(parents=True)
    (user / "index" / "manifest.json").write_text("{}")
    (user / "model").mkdir()
    (user / "model" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"holds other data \(index/, model/\)"):
        bench_out_dir(user, "serving", None)
    assert sorted(p.name for p in user.iterdir()) == ["index", "model"]  # untouched, no marker added
    (user / MARKER).write_text("generation\n")  # another benchmark's interrupted run
    with pytest.raises(UserError, match="holds other data"):
        bench_out_dir(user, "serving", None)


def test_a_bad_bench_model_is_refused_before_the_output_dir_is_made(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new"
    assert main(["bench", "serving", "--model", str(tmp_path / "nope"), "--out", str(out), "--json",
                 f"run_dir={tmp_path / 'r'}"]) == 2
    failure = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert failure["command"] == "bench serving" and failure["exit_code"] == 2  # named as a success would be
    assert "bench.serving.model (--model)" in failure["error"] and "does not exist" in failure["error"]
    assert main(["bench", "generation", "--model", "", "--out", str(out), f"run_dir={tmp_path / 'r'}"]) == 2
    assert "bench.generation.model: is blank" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output dir, no run dir

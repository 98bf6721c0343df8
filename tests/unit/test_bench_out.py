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


@pytest.mark.parametrize("which", ["index", "retrieval"])
def test_a_wrong_data_dir_is_refused_before_the_output_dir_is_made(tmp_path: Path, which: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, run = tmp_path / "new", f"run_dir={tmp_path / 'r'}"
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for data_dir, says in ((tmp_path / "nope", "is not there"), (tmp_path / "file", "is not a directory"),
                           (tmp_path / "empty", "no dev files under --data-dir")):
        assert main(["bench", which, "--data-dir", str(data_dir), "--out", str(out), run]) == 2
        assert says in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"]  # no output dir, no run dir


def test_dev_files_without_paragraphs_or_of_no_known_format_are_user_errors(tmp_path: Path) -> None:
    import pickle

    from steper_ray.bench.index_build import dev_paragraphs
    from steper_ray.data.readers import UndetectedFormat
    from steper_ray.errors import DataError

    (tmp_path / "hotpotqa").mkdir()
    dev = tmp_path / "hotpotqa" / "dev.jsonl"
    dev.write_text(json.dumps({"_id": "a", "question": "q", "answer": "x", "context": [],
                               "supporting_facts": []}) + "\n")
    with pytest.raises(DataError, match="hold no paragraphs to encode; give --data-dir"):
        dev_paragraphs(str(tmp_path))
    from steper_ray.bench.retrieval import run_retrieval_bench
    from steper_ray.config import SteperConfig

    with pytest.raises(DataError, match="holds no answerable questions with context paragraphs"):
        run_retrieval_bench(SteperConfig(), data_dir=str(tmp_path), dense=False)
    dev.write_text('{"foo": 1}\n')
    with pytest.raises(DataError) as caught:
        dev_paragraphs(str(tmp_path))
    assert "cannot detect the format" in str(caught.value) and "--format" not in str(caught.value)
    assert "detected from their records" in str(caught.value)
    err = UndetectedFormat("cannot detect X", "pass --format")  # crosses Ray's pickling whole
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.reason) == ("cannot detect X; pass --format", "cannot detect X")


def test_more_encoders_than_the_machine_has_cpus_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from steper_ray.bench import index_build
    from steper_ray.config import BenchIndexConfig

    monkeypatch.setattr(index_build.os, "cpu_count", lambda: 2)
    index_build.check_fits_machine(BenchIndexConfig(actors=2, encoder_num_cpus=1))
    for actors, cpus in ((3, 1), (1, 3), (2, 1.5)):
        with pytest.raises(UserError, match=f"= {actors * cpus:g} CPUs, more than this machine's 2"):
            index_build.check_fits_machine(BenchIndexConfig(actors=actors, encoder_num_cpus=cpus))


def test_an_interrupted_index_bench_removes_its_scratch_and_promises_no_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steper_ray.bench import index_build
    from steper_ray.config import SteperConfig
    from steper_ray.errors import ResumableInterrupt
    from steper_ray.progress import Progress, active

    seen: list[Path] = []

    def interrupted_build(parts: list[list[str]], corpus: Path, target: Path, cfg: SteperConfig,
                          side_done: object) -> None:
        seen.append(corpus)
        assert corpus.is_file()
        bar = index_build.progress()
        bar.start(1200, "passages encoded")  # the build's own count, then Ctrl-C inside it
        raise ResumableInterrupt(f"the parts done are kept in {target}; rerun the same command to resume")

    monkeypatch.setattr(index_build, "_round", interrupted_build)
    cfg = SteperConfig()
    (tmp_path / "out" / ".bench-index-killed" / "index").mkdir(parents=True)  # a killed run's scratch
    with active(Progress("bench-index")) as bar, pytest.raises(KeyboardInterrupt) as caught:
        index_build.run_index_bench(cfg, tmp_path / "out")
    assert type(caught.value) is KeyboardInterrupt  # not the build's "rerun to resume"
    assert seen and not seen[0].parent.exists() and list((tmp_path / "out").iterdir()) == []
    assert (bar.unit, bar.done, bar.total) == ("sides measured", 0, 12)  # its own count, as it began

"""`steper-ray evaluate --compare`: the table across runs from their evaluate summaries, what it
does with damaged summaries and with an --out that is not its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main


def _run(root: Path, name: str, metrics: object) -> Path:
    run = root / name
    (run / "evaluate").mkdir(parents=True)
    (run / "evaluate" / "summary.json").write_text(json.dumps({"command": "evaluate", "metrics": metrics}))
    return run


def test_compare_writes_its_table_and_never_over_other_files(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = _run(tmp_path, "a", {"dv": {"questions": 2, "em": 0.5, "f1": 0.6, "acc": 0.5, "mean_steps": 2.0,
                                       "tokens_per_question": 10.0}})
    odd = _run(tmp_path, "b", {"dv": {"em": None}})  # a metric not measured: shown as "-"
    out = tmp_path / "cmp"
    assert main(["evaluate", "--compare", str(good), str(odd), "--out", str(out)]) == 0
    table = (out / "comparison.md").read_text()
    assert "| a | dv | 2 | 0.500 | 0.600 | 0.500 |" in table and "| b | dv | - | - |" in table
    assert main(["evaluate", "--compare", str(good), "--out", str(out)]) == 0  # its own directory: rerun
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("keep")
    (mine / "notes.txt").write_text("keep")
    assert main(["evaluate", "--compare", str(good), "--out", str(mine)]) == 2
    assert "holds other data (notes.txt)" in capsys.readouterr().err
    (mine / "notes.txt").unlink()  # a summary.json the comparison did not write: still refused
    assert main(["evaluate", "--compare", str(good), "--out", str(mine)]) == 2
    assert "holds other data (summary.json)" in capsys.readouterr().err
    assert (mine / "summary.json").read_text() == "keep"
    linked = tmp_path / "linked"  # a link in its place would write through to the user's file
    linked.mkdir()
    (linked / "comparison.md").symlink_to(mine / "summary.json")
    assert main(["evaluate", "--compare", str(good), "--out", str(linked)]) == 2
    assert (mine / "summary.json").read_text() == "keep"
    # --compare given twice compares both; the failure line names `evaluate --compare`
    assert main(["evaluate", "--compare", str(good), "--compare", str(odd), "--out", str(out)]) == 0
    assert set(json.loads((out / "summary.json").read_text())["runs"]) == {"a", "b"}
    assert main(["evaluate", "--compare", str(linked), "--out", str(out), "--json"]) == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["command"] == "evaluate --compare"


@pytest.mark.parametrize(("content", "message"), [
    ('{"metrics":', "does not read as JSON"),
    ("[1]", "holds a JSON array, not an object"),
    ('{"command": "evaluate", "metrics": 5}', "has no per-dataset 'metrics' object"),
    ('{"command": "evaluate", "metrics": {}, "label": ["a"]}', "holds a 'label' that is a JSON array"),
    ('{"command": "evaluate", "metrics": {}, "model": "vllm"}', "holds a 'model' that is a JSON string"),
])
def test_a_damaged_summary_is_named_exit_2(content: str, message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path, "a", {})
    (run / "evaluate" / "summary.json").write_text(content)
    assert main(["evaluate", "--compare", str(run), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_file_or_missing_path_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["evaluate", "--compare", str(tmp_path / "f"), "--out", str(tmp_path / "cmp")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["evaluate", "--compare", str(tmp_path / "nope"), "--out", str(tmp_path / "cmp")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_out_that_holds_the_run_is_refused_for_that_reason(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    good = _run(tmp_path, "a", {"dv": {"questions": 2, "em": 0.5}})
    for run_dir, out in ((tmp_path / "r", tmp_path / "r"), (tmp_path / "x" / "run", tmp_path / "x")):
        assert main(["evaluate", "--compare", str(good), "--out", str(out), f"run_dir={run_dir}"]) == 2
        err = capsys.readouterr().err
        assert f"{out} is the run directory or holds it (the run's logs are in {run_dir / 'logs'})" in err
        assert not (out / "comparison.md").exists()

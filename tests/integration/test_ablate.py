"""`steper-ray ablate` on the embedded default with tiny settings: the generate stage runs first,
each mode trains (Ray Train + DeepSpeed) and is evaluated (Ray Data) into its own directory, the
report matches the per-mode evaluate summaries, and reruns resume mode by mode."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.evaluate.ablation import pct

pytestmark = pytest.mark.usefixtures("ray_session")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[dict, list[str]]:
    """The command's summary (its --json line) and the lines printed before it."""
    assert main(["ablate", "--json", *argv]) == 0
    *lines, last = capsys.readouterr().out.strip().splitlines()
    return json.loads(last), lines


@pytest.mark.slow
def test_ablate_trains_and_evaluates_each_mode_and_resumes(tmp_path: Path, tiny_model_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run, out = tmp_path / "run", tmp_path / "ablation"
    # the embedded default, made small: 3 training questions per dataset, one dev set of 2
    # questions, 2 optimizer steps on one worker, the session's tiny student
    argv = ["--modes", "vanilla_kd,first_heavy", "--out", str(out), f"run_dir={run}", "generate.limit=3",
            "data.dev=[{name: musique, path: 'sample:musique/dev.jsonl'}]", "evaluate.limit=2",
            f"train.student={tiny_model_dir}", "train.num_workers=1", "train.max_steps=2",
            "train.checkpoint_every=2", "train.micro_batch_size=1", "train.grad_accum=1"]
    summary, lines = _run(argv, capsys)
    # one progress line per part: the generate stage it ran first, then each mode's training and evaluation
    parts = ["generate", "vanilla_kd: train", "vanilla_kd: evaluate", "first_heavy: train", "first_heavy: evaluate"]
    first = [next((i for i, ln in enumerate(lines) if re.match(rf"{re.escape(p)} +\d", ln)), -1) for p in parts]
    assert -1 not in first and first == sorted(first), lines

    assert summary["command"] == "ablate" and json.loads((out / "summary.json").read_text()) == summary
    assert summary["generate"]["stage_status"] == "done" and (run / "generate" / "summary.json").is_file()
    assert summary["examples"] == str(run / "generate" / "examples")
    assert list(summary["modes"]) == ["vanilla_kd", "first_heavy"]
    assert {m: r["status"] for m, r in summary["modes"].items()} == {"vanilla_kd": "done", "first_heavy": "done"}
    # each mode's loss config as trained
    loss = {m: r["loss"] for m, r in summary["modes"].items()}
    assert loss["vanilla_kd"]["mode"] == "vanilla_kd"
    assert (loss["first_heavy"]["mode"], loss["first_heavy"]["weights"]) == ("uniform", [1.5, 1.0, 0.5])
    assert loss["first_heavy"]["target"] == "cumulative"

    report = (out / "ablation.md").read_text()
    asked = []
    ours = report.split("## Reference", 1)[0]
    for mode, row in summary["modes"].items():
        train = json.loads((out / mode / "train" / "summary.json").read_text())
        evaluation = json.loads((out / mode / "evaluate" / "summary.json").read_text())
        assert train["steps"] == 2 and train["loss"] == row["loss"]
        assert train["model"] == str(out / mode / "train" / "model") and train["student"] == str(tiny_model_dir)
        # evaluated: this mode's export, on the same two dev questions as every mode
        assert evaluation["model"] == {"kind": "hf", "model": str(out / mode / "train" / "model")}
        predictions = (out / mode / "evaluate" / "predictions" / "musique.jsonl").read_text().splitlines()
        asked.append([json.loads(p)["question_id"] for p in predictions])
        m = evaluation["metrics"]["musique"]
        assert m["questions"] == 2 and row["metrics"] == evaluation["metrics"]
        cells = " | ".join(pct(m[k]) for k in ("em", "f1", "acc"))
        assert sum(ln.startswith(f"| {mode} |") and ln.endswith(f"| 2 | {train['examples_used']} | {cells} |")
                   for ln in ours.splitlines()) == 1
    assert asked[0] == asked[1] and len(asked[0]) == 2
    assert train["examples_used"] > summary["modes"]["vanilla_kd"]["train"]["examples_used"]  # agg only
    assert "musique 2" in ours and summary["setting"]["dev_questions"] == {"musique": 2}
    assert "Reference: the paper's reported figures (not produced by this code)" in report
    assert "| vanilla_kd | 46.4 | 57.3 | 54.8 | 62.2 | 30.1 |" in report
    assert (out / "ablation.png").stat().st_size > 10_000

    # rerun: a mode trained but not evaluated is only evaluated; an evaluated one is skipped
    shutil.rmtree(out / "first_heavy" / "evaluate")
    trained = {m: (out / m / "train" / "summary.json").stat().st_mtime_ns for m in summary["modes"]}
    evaluated = (out / "vanilla_kd" / "evaluate" / "summary.json").stat().st_mtime_ns
    again, lines = _run(argv, capsys)
    assert not any(ln.startswith("generate ") for ln in lines), lines  # done before: not shown
    assert {m: r["status"] for m, r in again["modes"].items()} == {"vanilla_kd": "skipped", "first_heavy": "evaluated"}
    assert again["generate"]["stage_status"] == "skipped"
    assert {m: (out / m / "train" / "summary.json").stat().st_mtime_ns for m in summary["modes"]} == trained
    assert (out / "vanilla_kd" / "evaluate" / "summary.json").stat().st_mtime_ns == evaluated
    assert again["modes"]["first_heavy"]["metrics"] == summary["modes"]["first_heavy"]["metrics"]  # greedy

    third, _ = _run(argv, capsys)
    assert {r["status"] for r in third["modes"].values()} == {"skipped"}
    assert third["modes"] == {m: {**r, "status": "skipped"} for m, r in again["modes"].items()}

    # one mode asked for: the mode an earlier run evaluated here stays in the summary and the report
    one, _ = _run([*argv[:1], "first_heavy", *argv[2:]], capsys)
    assert {m: r["status"] for m, r in one["modes"].items()} == {"first_heavy": "skipped", "vanilla_kd": "earlier run"}
    assert one["modes"]["vanilla_kd"]["metrics"] == summary["modes"]["vanilla_kd"]["metrics"]
    table = (out / "ablation.md").read_text().split("## Reference", 1)[0]
    assert [ln.split(" | ")[0] for ln in table.splitlines() if ln.startswith("| ") and " | 2 | " in ln] == [
        "| first_heavy", "| vanilla_kd"]

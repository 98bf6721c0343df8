"""`steper-ray evaluate` on Ray Data over real dev samples, and the comparison report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.config import load_config
from steper_ray.evaluate.job import run_evaluate
from steper_ray.evaluate.report import compare_runs

pytestmark = pytest.mark.usefixtures("ray_session")


def test_evidence_teacher_and_tiny_student_evaluated_and_compared(tmp_path: Path, tiny_model_dir: Path) -> None:
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    teacher = run_evaluate(load_config(None, [
        f"run_dir={teacher_dir}", "evaluate.model.kind=evidence", "evaluate.prompt=teacher",
        "evaluate.limit=4", "evaluate.batch_size=3",
    ]))
    assert set(teacher["metrics"]) == {"hotpotqa", "musique", "2wikimultihopqa"}
    for name, m in teacher["metrics"].items():
        rows = [json.loads(x) for x in (teacher_dir / "evaluate" / "predictions" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == m["questions"] == 4 and m["errors"] == 0
        # the evidence teacher writes the gold answer from the annotations: EM 1 where its
        # retrieval found the evidence, and every step lists what it retrieved
        assert m["em"] == pytest.approx(sum(r["em"] for r in rows) / 4) and m["em"] >= 0.5
        assert all(len(s["passage_ids"]) == 4 and s["query"] for r in rows for s in r["steps"])
        assert m["mean_steps"] == pytest.approx(sum(r["num_steps"] for r in rows) / 4)
        assert (teacher_dir / "index" / name / "manifest.json").is_file()  # built on demand

    student = run_evaluate(load_config(None, [
        f"run_dir={student_dir}", "evaluate.model.kind=hf", f"evaluate.model.model={tiny_model_dir}",
        "evaluate.model.max_tokens=8", "evaluate.limit=2", "reasoning.max_steps=2",
        "data.dev=[{name: musique, path: 'sample:musique/dev.jsonl'}]", "data.corpus=pooled",
    ]))
    m = student["metrics"]["musique"]
    assert m["questions"] == 2 and m["mean_steps"] == 2.0 and m["tokens_per_question"] > 0
    assert student["model"]["kind"] == "hf"
    # the pooled setting: the musique index holds its train and dev paragraphs, in a place of its own
    assert student["corpus"] == "pooled" and teacher["corpus"] == "questions"
    assert (student_dir / "index" / "pooled" / "musique" / "manifest.json").is_file()
    assert not (student_dir / "index" / "musique").exists()

    out = tmp_path / "compare"
    assert main(["evaluate", "--compare", str(teacher_dir), str(student_dir), "--out", str(out)]) == 0
    table, notes = (out / "comparison.md").read_text().split("\n\n")
    table = table.splitlines()
    assert len(table) == 2 + 3 + 1  # header, 3 teacher rows, 1 student row
    assert notes.splitlines() == ["Indexes (data.corpus): teacher (teacher): questions; student: pooled",
                                  "**These runs retrieved from different corpora: their scores are not comparable.**"]
    assert any(line.startswith("| teacher (teacher) | musique | 4 |") for line in table)
    assert any(line.startswith("| student | musique | 2 |") for line in table)
    assert (out / "comparison.png").stat().st_size > 10_000


def test_missing_student_and_unevaluated_runs_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", f"run_dir={tmp_path}"]) == 2
    assert "no trained student" in capsys.readouterr().err
    with pytest.raises(Exception, match="has no evaluation results"):
        compare_runs([str(tmp_path)], tmp_path / "cmp")
    assert main(["evaluate", "--compare", str(tmp_path), "run_dir=x"]) == 2
    assert "has no evaluation results" in capsys.readouterr().err

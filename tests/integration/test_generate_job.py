"""The Ray Data generation job end to end on the bundled samples (local Ray, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steper_ray.config import load_config
from steper_ray.data import read_dataset
from steper_ray.generate.job import run_generate
from steper_ray.reasoning.prompts import completion_text

pytestmark = pytest.mark.usefixtures("ray_session")


def _outputs(out: Path) -> tuple[list[dict], list[dict]]:
    traces = pq.read_table(out / "traces").to_pylist()
    examples = pq.read_table(out / "examples").to_pylist()
    return traces, examples


def _check_exactly_once(traces: list[dict], examples: list[dict], expected_ids: set[str]) -> None:
    ids = [t["question_id"] for t in traces]
    assert len(ids) == len(set(ids)), "a question was written twice"
    assert set(ids) == expected_ids, "a question is missing"
    ex_ids = [e["id"] for e in examples]
    assert len(ex_ids) == len(set(ex_ids))
    kept = {t["question_id"]: t for t in traces if t["kept"]}
    assert {e["question_id"] for e in examples} == set(kept)
    for qid, t in kept.items():
        assert sorted(e["step"] for e in examples if e["question_id"] == qid) == list(range(1, t["num_steps"] + 1))


def test_evidence_teacher_job_on_sample_data(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", "generate.batch_size=8", "generate.limit=12"])
    summary = run_generate(cfg)
    out = tmp_path / "generate"
    traces, examples = _outputs(out)
    expected = {r.id for s in cfg.data.train for r in read_dataset(s.path, limit=12).records}
    _check_exactly_once(traces, examples, expected)
    assert summary["questions_in"] == 24 and summary["kept"] == 24 and summary["dropped"] == 0
    tasks = summary["examples_per_task"]
    assert tasks["init"] == 24 and tasks["agg"] == 24 and tasks["exp"] >= 1
    assert sum(tasks.values()) == len(examples)
    assert summary["this_run"]["questions"] == 24 and summary["this_run"]["questions_per_s"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    # Each example is the student's view of its step: the next step's prompt continues it.
    by_q: dict[str, list[dict]] = {}
    for e in examples:
        by_q.setdefault(e["question_id"], []).append(e)
    for steps in by_q.values():
        steps.sort(key=lambda e: e["step"])
        for a, b in zip(steps, steps[1:]):
            assert b["prompt"].endswith(a["prompt"].split("\nQ: ", 1)[1] + a["completion"])
            assert a["completion"] == completion_text(a["completion"].strip())
    # The retrieval index was built once, for the training corpus.
    assert (tmp_path / "index/train/manifest.json").is_file()
    # Rerun: nothing to do, same totals.
    again = run_generate(cfg)
    assert again["this_run"]["questions"] == 0 and again["this_run"]["skipped_already_done"] == 24
    assert again["kept"] == 24


def test_a_damaged_part_is_repaired_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steper_ray.cli import main

    args = ["generate", f"run_dir={tmp_path}", "generate.batch_size=4", "generate.limit=6", "--json"]
    assert main(args) == 0
    out = tmp_path / "generate"
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    victim = sorted((out / "traces").glob("part-*.parquet"))[1]
    lost = set(pq.read_table(victim).column("question_id").to_pylist())
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # cut to half
    # rerun: no traceback, the part is moved aside and its questions are generated again
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["part"], r["file"]) for r in summary["repaired_parts"]] == [(victim.name, str(victim))]
    assert summary["this_run"]["questions"] == len(lost) and summary["kept"] == first["kept"] == 12
    traces, examples = _outputs(out)
    expected = {r.id for s in load_config(None, args[1:4]).data.train for r in read_dataset(s.path, limit=6).records}
    assert lost < expected
    _check_exactly_once(traces, examples, expected)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "damaged/traces" / victim.name).is_file()


def test_bad_rows_become_error_rows(tmp_path: Path, tiny_model_dir: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(x) for x in [
        {"id": "ok1", "question": "Which band had Neil Peart?", "answers": ["Rush"]},
        {"id": "huge", "question": "word " * 5000, "answers": ["x"]},
        {"id": "ok2", "question": "Where is Port Blair?", "answers": ["India"]},
    ]) + "\n")
    data = (f"data.train=[{{name: qa, path: '{qa}'}}, "
            "{name: bad, path: 'sample:2wikimultihopqa/malformed.jsonl'}, "
            "{name: mu, path: 'sample:musique/dev.jsonl', limit: 3}]")
    cfg = load_config(None, [
        f"run_dir={tmp_path / 'run'}", data, "generate.teacher.kind=hf",
        f"generate.teacher.model={tiny_model_dir}", "generate.teacher.max_tokens=4",
        "generate.teacher.max_model_len=4096", "generate.batch_size=4", "reasoning.max_steps=2",
    ])
    summary = run_generate(cfg)
    traces, examples = _outputs(tmp_path / "run/generate")
    by_id = {t["question_id"]: t for t in traces}
    assert len(traces) == 3 + 36 + 3 == summary["questions"] == summary["questions_in"]
    assert by_id["huge"]["drop_reason"].startswith("error: prompt has") and "max_model_len 4096" in by_id["huge"]["drop_reason"]
    assert by_id["ok1"]["error"] is None and by_id["ok1"]["num_steps"] == 2
    bad = [t for t in traces if t["dataset"] == "bad"]
    assert len(bad) == 36 and all(t["drop_reason"] == "bad record: missing field 'context'" for t in bad)
    assert summary["dropped_by_reason"]["bad record"] == 36
    assert summary["dropped_by_reason"]["error"] == 1
    assert summary["tokens_generated"] > 0


@pytest.mark.slow
def test_sigkill_then_rerun_writes_every_question_exactly_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = tmp_path / "run"
    overrides = [f"run_dir={run}", "generate.teacher.kind=hf", f"generate.teacher.model={tiny_model_dir}",
                 "generate.teacher.max_tokens=24", "generate.batch_size=2", "reasoning.max_steps=3",
                 "generate.limit=14"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "steper_ray.cli", "generate", *overrides],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    traces_dir = run / "generate/traces"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            parts = [p for p in traces_dir.glob("part-*.parquet")] if traces_dir.exists() else []
            if len(parts) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    written = len(pq.read_table(traces_dir).column("question_id")) if any(traces_dir.glob("part-*")) else 0
    assert 0 < written < 20, f"kill landed outside the run ({written} written)"

    summary = run_generate(load_config(None, overrides))
    traces, examples = _outputs(run / "generate")
    # two questions per dataset are the teacher's demonstrations (reasoning.demos: auto), never generated
    held_out = {q for d in summary["demos"].values() for q in d["questions"]}
    assert len(held_out) == summary["held_out_for_demos"] == 4
    expected = {r.id for s in load_config(None, overrides).data.train for r in read_dataset(s.path, limit=14).records}
    _check_exactly_once(traces, examples, expected - held_out)
    assert summary["this_run"]["skipped_already_done"] == written
    assert summary["questions"] == len(expected - held_out) >= 20


def test_tensor_parallel_placement_is_one_gpu_bundles_on_one_node() -> None:
    from ray.util import remove_placement_group

    from steper_ray.reasoning.job import tensor_parallel_args

    args = tensor_parallel_args(4, 2.0)()
    strategy = args["scheduling_strategy"]
    pg = strategy.placement_group
    assert pg.bundle_specs == [{"GPU": 1, "CPU": 2.0}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]
    assert strategy.placement_group_capture_child_tasks is True
    remove_placement_group(pg)


def test_same_question_in_two_datasets_is_written_once_plus_a_reasoned_row(tmp_path: Path) -> None:
    data = ("data.train=[{name: a, path: 'sample:musique/dev.jsonl', limit: 3},"
            " {name: b, path: 'sample:musique/dev.jsonl', limit: 3}]")
    summary = run_generate(load_config(None, [f"run_dir={tmp_path}", data]))
    traces = pq.read_table(tmp_path / "generate/traces").to_pylist()
    ids = [t["question_id"] for t in traces]
    assert len(ids) == len(set(ids)) == 6 and summary["kept"] == 3
    dupes = [t for t in traces if t["dataset"] == "b"]
    assert all(t["drop_reason"] == "bad record: duplicate id across datasets" and t["question_id"].startswith("b:")
               for t in dupes)

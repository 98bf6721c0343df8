"""End to end: the evidence teacher answers four questions, the tiny student is trained on their
step examples until it has memorised them, then served; over HTTP it must give the teacher's
answers (and steps). This passes only if training and inference prompts are identical, the
export is right, and serving runs the same loop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from steper_ray.commands.pipeline import run_pipeline
from steper_ray.config import load_config

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.slow
def test_memorised_student_served_over_http_answers_like_the_teacher(tmp_path: Path, serve_url: str) -> None:
    from ray import serve

    from steper_ray.serve.app import build_app

    run = tmp_path / "run"
    cfg = load_config(None, [
        f"run_dir={run}",
        "data.train=[{name: musique, path: 'sample:musique/train.json', limit: 4}]",
        "data.dev=[{name: musique, path: 'sample:musique/dev.jsonl', limit: 4}]",
        "reasoning.max_steps=3", "retrieval.k=2", "reasoning.max_passages=4",
        "train.lr=0.003", "train.warmup_ratio=0.05", "train.epochs=1000", "train.max_steps=300",
        "train.micro_batch_size=1", "train.grad_accum=1", "train.checkpoint_every=300",
        "evaluate.limit=2",
        f"serve.index={run / 'index' / 'train'}", "serve.model.kind=hf", f"serve.model.model={run / 'train' / 'model'}",
        "serve.model.max_tokens=128", "serve.auth_token_env=null",
    ])
    summary = run_pipeline(cfg)
    assert summary["generate"]["kept"] == 4
    traces = [t for t in pq.read_table(run / "generate" / "traces").to_pylist() if t["kept"]]
    assert len(traces) == 4

    serve.run(build_app(cfg), name="e2e", route_prefix="/e2e")
    try:
        with httpx.Client(base_url=f"{serve_url}/e2e", timeout=120) as client:
            for t in traces:
                r = client.post("/v1/answer", json={"question": t["question"]})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["answer"] == t["answer"], (t["question"], body)
                assert [s["reasoning"] for s in body["steps"]] == [s["output"] for s in t["steps"]]
                assert [[p["id"] for p in s["passages"]] for s in body["steps"]] == \
                    [s["retrieved_ids"] for s in t["steps"]]
    finally:
        serve.delete("e2e")

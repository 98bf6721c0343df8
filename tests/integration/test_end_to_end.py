"""End to end: the evidence teacher answers four questions, the tiny student is trained on their
step examples until it has memorised them, then served; over HTTP it must give the teacher's
answers (and steps). This passes only if training and inference prompts are identical, the
export is right, and serving runs the same loop. The same run checks what training logs (every
step's metrics, TensorBoard, MLflow, the sigma plot) and that vLLM loads the export and
reproduces every training completion greedily."""

from __future__ import annotations

import json
import os
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
        "train.lr=0.003", "train.warmup_ratio=0.05", "train.epochs=1000", "train.max_steps=200",
        "train.micro_batch_size=1", "train.grad_accum=1", "train.checkpoint_every=100",
        "train.tensorboard=true", f"train.mlflow_uri=file:{tmp_path / 'mlruns'}", "evaluate.limit=2",
        f"serve.index={run / 'index' / 'train'}", "serve.model.kind=hf", f"serve.model.model={run / 'train' / 'model'}",
        "serve.model.max_tokens=128", "serve.auth_token_env=null",
    ])
    summary = run_pipeline(cfg)
    assert summary["generate"]["kept"] == 4
    _check_training_logs(run / "train", tmp_path / "mlruns")
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

    _check_vllm_reproduces_the_completions(run / "train" / "model", run / "generate" / "examples")


def _check_training_logs(out: Path, mlruns: Path) -> None:
    train = json.loads((out / "summary.json").read_text())
    assert train["steps"] == 200
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 201))
    assert {"loss_init", "sigma_agg", "weight_exp", "lr", "grad_norm", "tokens_per_s"} <= set(metrics[-1])
    # learned sigmas moved, and follow the loss: s_j -> log L_j as the loss falls
    assert all(metrics[-1][f"sigma_{t}"] < 1.0 for t in ("init", "exp", "agg"))
    assert (out / "sigmas.png").stat().st_size > 10_000
    assert train["checkpoint"] and Path(train["checkpoint"]).is_dir()
    assert any((out / "tb").glob("events.out.tfevents.*"))
    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store needs it too
    mlflow.set_tracking_uri(f"file:{mlruns}")
    client = mlflow.tracking.MlflowClient()
    (mlrun,) = client.search_runs([client.get_experiment_by_name("steper-ray").experiment_id])
    assert len(client.get_metric_history(mlrun.info.run_id, "sigma_agg")) == 200


def _check_vllm_reproduces_the_completions(model: Path, examples: Path) -> None:
    """vLLM loads the export, and its greedy output for each training prompt (stopping at the
    newline, as the reasoning loop does) is the trained completion."""
    pytest.importorskip("vllm")
    from steper_ray.reasoning.generators.protocol import GenRequest
    from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator
    from steper_ray.reasoning.prompts import completion_text
    from steper_ray.reasoning.steps import shape_step

    rows = pq.read_table(examples).to_pylist()
    gen = VLLMGenerator(str(model), max_model_len=4096, max_tokens=128, dtype="float32")
    outs = gen.generate([GenRequest(r["prompt"]) for r in rows])
    # the loop's step is the raw output shaped (reasoning/steps.py): the leading space goes
    assert [completion_text(shape_step(o.text, o.finish_reason, []).text) for o in outs] == \
        [r["completion"] for r in rows]

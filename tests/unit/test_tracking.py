from __future__ import annotations

import json
import struct
from pathlib import Path

from steper_ray.train.tracking import MetricSinks


def _tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Read TensorBoard event files (TFRecord framing) without TensorFlow."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for f in folder.glob("events.out.tfevents.*"):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_metrics_reach_jsonl_tensorboard_and_mlflow(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'mlruns'}"
    sinks = MetricSinks(tmp_path, tensorboard=True, mlflow_uri=uri, run_name="t", params={"lr": 0.1, "loss": {}})
    for step in (1, 2, 3):
        sinks.log({"step": step, "loss_init": 1.0 / step, "sigma_agg": 1.0 + step, "loss_exp": None})
    sinks.close()

    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    tb = _tb_scalars(tmp_path / "tb")
    assert [s for s, _ in tb["loss_init"]] == [1, 2, 3]
    assert [round(v, 4) for _, v in tb["sigma_agg"]] == [2.0, 3.0, 4.0]
    assert "loss_exp" not in tb  # missing task: nothing logged rather than a fake 0

    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("steper-ray")
    (run,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(run.info.run_id, "loss_init")
    assert [(m.step, round(m.value, 4)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    assert run.data.params["lr"] == "0.1"


def test_a_resumed_run_drops_the_rows_logged_after_its_checkpoint(tmp_path: Path) -> None:
    # an interrupted attempt logged steps 1-5 (the last line half-written); its checkpoint is step 3
    rows = [json.dumps({"step": s, "loss_init": 1.0}) for s in (1, 2, 3, 4, 5)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + '\n{"step": 6, "lo')
    sinks = MetricSinks(tmp_path, start_step=3)
    for step in (4, 5, 6):
        sinks.log({"step": step, "loss_init": 0.5})
    sinks.close()
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_init"]) for r in logged] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.5), (5, 0.5), (6, 0.5)]
    MetricSinks(tmp_path).close()  # a new run (no checkpoint) starts the file again
    assert (tmp_path / "metrics.jsonl").read_text() == ""

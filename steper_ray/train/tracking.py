"""Where per-step training metrics go (rank 0 only): metrics.jsonl always, TensorBoard and
MLflow when configured."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from steper_ray.layout import TrainDir


def keep_rows_up_to(metrics: Path, step: int) -> None:
    """Cut ``metrics`` (metrics.jsonl) back to the rows of steps 1..``step``: a run resumed from
    step ``step``'s checkpoint logs the later steps again, and an interrupted attempt's rows for
    them (or a half-written last line) would otherwise stay beside the new ones."""
    if not metrics.is_file():
        return
    kept = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            row_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
        if row_step <= step:
            kept.append(line + "\n")
    tmp = metrics.with_name(metrics.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(metrics)


class MetricSinks:
    def __init__(self, out: Path, tensorboard: bool = False, mlflow_uri: str | None = None,
                 run_name: str = "student", params: dict[str, Any] | None = None, start_step: int = 0):
        """Sinks for a run that continues after optimizer step ``start_step`` (0: a new run):
        metrics.jsonl keeps the rows up to it and gets the later ones appended."""
        files = TrainDir(out)
        keep_rows_up_to(files.metrics, start_step)
        self.jsonl = files.metrics.open("a")
        self.tb = None
        self.mlflow = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(files.tensorboard))
        if mlflow_uri:
            if mlflow_uri.startswith("file:"):
                # MLflow 3 keeps the plain-directory store (no server, no database) behind a flag.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            import mlflow

            mlflow.set_tracking_uri(mlflow_uri)
            mlflow.set_experiment("steper-ray")
            self.mlflow = mlflow
            mlflow.start_run(run_name=run_name)
            if params:
                mlflow.log_params({k: v for k, v in params.items() if not isinstance(v, (dict, list))})

    def log(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["step"])
        self.jsonl.write(json.dumps(metrics) + "\n")
        self.jsonl.flush()
        numbers = {k: float(v) for k, v in metrics.items()  # the step is the x axis, not a metric
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "total_steps")}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(numbers, step=step)

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()

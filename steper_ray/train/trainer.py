"""`steper-ray train`: Ray Train TorchTrainer around train_loop_per_worker."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from steper_ray.config import GeneratorConfig, SteperConfig
from steper_ray.errors import UserError
from steper_ray.ray_session import ensure_ray
from steper_ray.summary import write_summary
from steper_ray.train.loop import make_loop_config, train_loop_per_worker
from steper_ray.train.report import plot_sigmas, read_metrics

log = logging.getLogger(__name__)


def resolve_student(cfg: SteperConfig) -> str:
    if cfg.train.student:
        from steper_ray.models.prepare import resolve_model

        student = resolve_model(cfg.train.student)
        if not (Path(student) / "config.json").is_file():
            raise UserError(f"train.student {cfg.train.student} is not a Hugging Face model directory "
                            "(no config.json); point it at a local model or use 'smollm2'")
        return student
    path = Path(cfg.run_dir) / "models" / "student"
    if not (path / "config.json").is_file():
        from steper_ray.commands.tiny_model import run_tiny_model

        log.info("building the offline tiny student at %s", path)
        run_tiny_model(cfg, path)
    return str(path)


def resolve_examples(cfg: SteperConfig) -> str:
    path = Path(cfg.train.examples or Path(cfg.run_dir) / "generate" / "examples")
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        raise UserError(f"no step examples at {path}; run `steper-ray generate` first or set train.examples")
    import pyarrow.dataset as pads

    if pads.dataset(str(path), format="parquet").count_rows() == 0:
        raise UserError(f"{path} holds no step examples: the teacher kept no traces (see "
                        f"{Path(cfg.run_dir) / 'generate' / 'summary.json'} for why each was dropped); "
                        "use a stronger teacher, or the evidence teacher (generate.teacher.kind=evidence)")
    check_one_step(cfg, str(path))
    return str(path)


def check_one_step(cfg: SteperConfig, examples: str) -> None:
    """Every worker must be able to fill one optimizer step (grad_accum micro-batches of one task
    each) with the examples its loss mode trains on; say so before any worker starts."""
    import pyarrow.dataset as pads

    from steper_ray.train.data import micro_batches_per_rank, rows_for_loss

    t = cfg.train
    rows = pads.dataset(examples, format="parquet").to_table(columns=["id", "task"]).to_pylist()
    per_rank = micro_batches_per_rank(rows, t.loss.mode, t.num_workers, t.micro_batch_size)
    if min(per_rank) < t.grad_accum:
        used = "agg examples" if t.loss.mode == "vanilla_kd" else "examples"
        raise UserError(
            f"too few step examples for one optimizer step: train.loss.mode {t.loss.mode} trains on "
            f"{len(rows_for_loss(rows, t.loss.mode))} {used} in "
            f"{examples}, which make {min(per_rank)} micro-batches (of one task, up to "
            f"train.micro_batch_size={t.micro_batch_size}) on the smallest of train.num_workers="
            f"{t.num_workers} workers, and a step needs train.grad_accum={t.grad_accum}; lower "
            "train.grad_accum, train.micro_batch_size or train.num_workers, or generate more traces")


def train_out_dir(cfg: SteperConfig) -> Path:
    return Path(cfg.train.out or Path(cfg.run_dir) / "train")


def trained_student(cfg: SteperConfig, setting: str) -> GeneratorConfig:
    """This run's exported student on transformers; ``setting`` is the key that picks another model."""
    path = train_out_dir(cfg) / "model"
    if not (path / "config.json").is_file():
        raise UserError(f"no trained student: no model at {path}; run `steper-ray train` first, or set "
                        f"{setting} (e.g. {setting}.kind=hf {setting}.model=DIR)")
    return GeneratorConfig(kind="hf", model=str(path))


def run_train(cfg: SteperConfig) -> dict[str, Any]:
    import ray
    import ray.train
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t0 = time.perf_counter()
    tcfg = cfg.train
    out = train_out_dir(cfg).resolve()
    examples = resolve_examples(cfg)
    student = resolve_student(cfg)
    ensure_ray()
    out.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=make_loop_config(tcfg, str(Path(student).resolve()), examples, str(out)),
        scaling_config=ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
            resources_per_worker={"CPU": tcfg.cpus_per_worker, **({"GPU": 1} if tcfg.use_gpu else {})},
        ),
        torch_config=TorchConfig(backend="nccl" if tcfg.use_gpu else "gloo"),
        # Every worker reads all examples and keeps a deterministic, balanced share
        # (train.data.shard_rows), so a resumed run continues over the same data.
        datasets={"train": ray.data.read_parquet(examples)},
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=tcfg.run_name,
            storage_path=str(out / "ray"),
            checkpoint_config=CheckpointConfig(num_to_keep=tcfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=tcfg.max_failures),
        ),
    )
    result = trainer.fit()
    rows = read_metrics(out / "metrics.jsonl")
    plot = plot_sigmas(rows, out / "sigmas.png") if rows else None
    state = out / "train_state.json"
    train_state = json.loads(state.read_text()) if state.is_file() else {}
    final = rows[-1] if rows else {}
    summary = {
        "command": "train",
        "out": str(out),
        "model": str(out / "model"),
        "student": student,
        "examples": examples,
        "loss_mode": tcfg.loss.mode,
        "loss": tcfg.loss.model_dump(),
        "params": train_state.get("params"),
        "steps": train_state.get("steps"),
        "examples_used": train_state.get("examples_used"),
        "dropped_examples": train_state.get("dropped_examples"),
        "final": {k: final.get(k) for k in final if k.startswith(("loss_", "sigma_", "weight_"))},
        "tokens_per_s_last": final.get("tokens_per_s"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "plot": str(plot) if plot else None,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(out, summary)
    return summary

"""`steper-ray train`: Ray Train TorchTrainer around train_loop_per_worker."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steper_ray.config import SteperConfig
from steper_ray.errors import UserError, user_error_in
from steper_ray.layout import RunLayout, TrainDir
from steper_ray.models.student import resolve_student
from steper_ray.progress import progress
from steper_ray.ray_session import ensure_ray
from steper_ray.summary import write_summary
from steper_ray.train.loop import make_loop_config, train_loop_per_worker
from steper_ray.train.loss import TASKS
from steper_ray.train.report import plot_sigmas, read_metrics

log = logging.getLogger(__name__)


def resolve_examples(cfg: SteperConfig) -> str:
    """The step examples training reads (``RunLayout.examples``); UserError when there are none."""
    layout = RunLayout(cfg)
    path = layout.examples
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        if cfg.train.examples:  # the user's setting: the fix is the setting, not running generate
            raise UserError(f"train.examples {path} holds no step examples (no *.parquet); point it at the "
                            "examples/ directory `steper-ray generate` writes, or unset it")
        raise UserError(f"no step examples at {path}; run `steper-ray generate` first or set train.examples")
    rows = _example_rows(path)
    if not rows:
        if cfg.train.examples:
            raise UserError(f"train.examples {path} holds no step examples (0 rows); point it at the "
                            "examples/ directory `steper-ray generate` writes, or unset it")
        raise UserError(f"{path} holds no step examples: the teacher kept no traces (see "
                        f"{layout.generate / 'summary.json'} for why each was dropped); "
                        "use a stronger teacher, or the evidence teacher (generate.teacher.kind=evidence)")
    check_one_step(cfg, str(path), rows)
    return str(path)


def _example_rows(path: Path) -> list[dict[str, Any]]:
    """The id and task of every step example at ``path``, after checking that every row has
    the text columns training reads (``generate.examples.trace_examples`` writes them). Raises
    UserError naming what is wrong: not Parquet, a column missing, of another type or empty."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    needed = ("id", "task", "prompt", "completion")
    fix = "point train.examples at the examples/ directory `steper-ray generate` writes"
    try:
        table = pads.dataset(str(path), format="parquet").to_table(columns=list(needed))
    except (pa.ArrowInvalid, OSError) as exc:  # not Parquet, or Parquet without the step-example columns
        raise UserError(f"{path} does not read as step examples ({str(exc).splitlines()[0]}; they need "
                        f"the columns {', '.join(needed)}); {fix}") from None
    problems = [f"column {name!r} is {table[name].type}, not text" for name in needed
                if not pa.types.is_string(table[name].type) and not pa.types.is_large_string(table[name].type)]
    problems += [f"{table[name].null_count} row(s) have no {name!r}" for name in needed
                 if not problems and table[name].null_count]  # e.g. a part with other columns
    if not problems:
        odd = sorted(set(pc.unique(table["task"]).to_pylist()) - set(TASKS))
        problems += [f"task values {odd} are not {', '.join(TASKS)}"] if odd else []
    if problems:
        raise UserError(f"{path} does not hold step examples: {'; '.join(problems)}; {fix}")
    return table.select(["id", "task"]).to_pylist()


def check_one_step(cfg: SteperConfig, examples: str, rows: list[dict[str, Any]]) -> None:
    """Every worker must be able to fill one optimizer step (grad_accum micro-batches of one task
    each) with the examples its loss mode trains on (``rows``: the id and task of every example
    in ``examples``); say so before any worker starts."""
    from steper_ray.train.data import micro_batches_per_rank, rows_for_loss

    t = cfg.train
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


def last_logged_step(metrics: Path) -> dict[str, Any] | None:
    """The last complete row of a metrics.jsonl being written (None before the first)."""
    try:
        with metrics.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16384))
            lines = fh.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines[:-1]):  # the part after the last newline may be half-written
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


@contextmanager
def steps_progress(metrics: Path, every_s: float = 1.0) -> Iterator[None]:
    """While training runs, the stage's progress follows the optimizer steps rank 0 logs."""
    bar = progress()
    bar.start(None, "steps")
    stop = threading.Event()

    def follow() -> None:
        seen = None
        while not stop.wait(every_s):
            row = last_logged_step(metrics)
            if row is not None and row != seen:
                seen = row
                bar.update(int(row["step"]), row.get("total_steps"))

    thread = threading.Thread(target=follow, name="steps-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        row = last_logged_step(metrics)
        if row is not None:
            bar.update(int(row["step"]), row.get("total_steps"))


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@contextmanager
def _keeping_sigint_handler() -> Iterator[None]:
    """Put the caller's SIGINT handler back afterwards: ``TorchTrainer.fit`` replaces it with one
    that aborts its controller (Ray 2.60) and, once that is gone, exits 0 on the next Ctrl-C."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run_train(cfg: SteperConfig) -> dict[str, Any]:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t0 = time.perf_counter()
    tcfg = cfg.train
    out = RunLayout(cfg).train.resolve()
    files = TrainDir(out)
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
        run_config=RunConfig(
            name=tcfg.run_name,
            storage_path=str(files.ray_storage),
            checkpoint_config=CheckpointConfig(num_to_keep=tcfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=tcfg.max_failures),
        ),
    )
    finished_before = _mtime(files.state)
    with steps_progress(files.metrics), _keeping_sigint_handler():
        try:
            result = trainer.fit()
        except SystemExit as exc:  # Ray Train's Ctrl-C handler ends an aborted run with sys.exit(0)
            raise KeyboardInterrupt from exc
        except Exception as exc:  # Ray Train wraps the workers' errors; a user mistake stays one
            mistake = user_error_in(exc)
            if mistake is None:
                raise
            raise mistake from exc
    if _mtime(files.state) in (None, finished_before):
        # fit() installs Ray Train's own Ctrl-C handler, which aborts the run (checkpoints kept);
        # fit() may then return normally, and the workers never got to export.
        raise KeyboardInterrupt
    rows = read_metrics(files.metrics)
    plot = plot_sigmas(rows, files.sigma_plot) if rows else None
    state = files.state
    train_state = json.loads(state.read_text()) if state.is_file() else {}
    final = rows[-1] if rows else {}
    summary = {
        "command": "train",
        "out": str(out),
        "model": str(files.export),
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

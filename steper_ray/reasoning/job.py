"""The Ray Data job that runs the step-wise loop over questions: teacher generation and
evaluation both call ``run_reasoner_job`` and differ only in the ReasonerStage subclass that
turns each (record, trace) into rows (a filtered trace with its step examples, or a scored
prediction).

Questions travel as Arrow rows (``data.record_table``), one Ray Data block per batch, mapped
over an actor pool: each actor builds its engine, retrievers and prompt builders once. A vLLM
model with tensor parallel > 1 gets one placement group per actor (``tensor_parallel_args``);
otherwise each actor asks for ``num_gpus``. The driver receives Arrow batches of output rows
and reports progress in questions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from steper_ray.config import GeneratorConfig
from steper_ray.data.record_table import records_table
from steper_ray.data.records import QuestionRecord
from steper_ray.progress import progress
from steper_ray.ray_session import check_fits, ensure_ray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorPool:
    """How many reasoner actors, what each reserves, and how many questions per call."""

    replicas: int
    batch_size: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    section: str = "generate"  # the config section these come from, named when they cannot fit


def tensor_parallel_args(tp: int, num_cpus: float) -> Any:
    """``ray_remote_args_fn`` for TP > 1: each actor gets a placement group of ``tp`` one-GPU
    bundles on one node (``STRICT_PACK``); vLLM's Ray executor puts its workers there (the actor
    itself holds no GPU)."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    def args() -> dict[str, Any]:
        bundles = [{"GPU": 1, "CPU": num_cpus}] + [{"GPU": 1}] * (tp - 1)
        pg = placement_group(bundles, strategy="STRICT_PACK")
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)}

    return args


def actor_resources(model: GeneratorConfig, pool: ActorPool) -> dict[str, Any]:
    """Ray Data ``map_batches`` resource arguments for actors that hold ``model``."""
    tp = model.tensor_parallel_size if model.kind == "vllm" else 1
    if tp > 1:
        return {"num_cpus": 0, "ray_remote_args_fn": tensor_parallel_args(tp, pool.num_cpus)}
    return {"num_cpus": pool.num_cpus, **({"num_gpus": pool.num_gpus} if pool.num_gpus else {})}


def run_reasoner_job(records: list[QuestionRecord], stage: type, stage_kwargs: dict[str, Any],
                     model: GeneratorConfig, pool: ActorPool, total: int | None = None,
                     done: int = 0) -> Iterator[list[dict[str, Any]]]:
    """Run ``stage`` (a ReasonerStage subclass built with ``stage_kwargs``) over ``records``
    and yield its output rows, one list per finished batch, in completion order.

    A task Ray retries may deliver a question twice: callers keep the first (generate) or the
    last (evaluate) row per question. Progress counts rows received against ``total`` (default
    ``len(records)``), ``done`` of them finished before this run (resume).
    """
    ensure_ray()
    import ray

    tp = model.tensor_parallel_size if model.kind == "vllm" else 1
    check_fits("a reasoner actor", pool.num_cpus, pool.num_gpus if tp == 1 else tp,
               f"{pool.section}.num_cpus / {pool.section}.num_gpus" + (" or the tensor_parallel_size" if tp > 1 else ""))
    table = records_table(records)
    # one block per batch, so that the actors share the questions from the first batch on
    blocks = [table.slice(i * pool.batch_size, pool.batch_size)
              for i in range(max(1, math.ceil(len(records) / pool.batch_size)))]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        stage,
        fn_constructor_kwargs=stage_kwargs,
        batch_size=pool.batch_size,
        compute=ray.data.ActorPoolStrategy(size=pool.replicas),
        batch_format="pyarrow",
        **actor_resources(model, pool),
    )
    bar = progress()
    bar.start(total if total is not None else len(records), "questions", done)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows = batch.to_pylist()
        bar.advance(len(rows))
        yield rows

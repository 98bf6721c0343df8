"""Run the loop over a batch so that one question that breaks it costs only that question."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from steper_ray.data.records import QuestionRecord
from steper_ray.reasoning.loop import Trace

log = logging.getLogger(__name__)


def run_isolated(run: Callable[[list[QuestionRecord]], list[Trace]],
                 records: Sequence[QuestionRecord]) -> list[Trace]:
    """``run(records)``; if it raises, rerun question by question and turn failures into error traces."""
    try:
        return run(list(records))
    except Exception as exc:  # noqa: BLE001 - isolate the question that breaks the batch
        log.warning("batch of %d failed (%s); rerunning question by question", len(records), exc)
    traces: list[Trace] = []
    for rec in records:
        try:
            traces += run([rec])
        except Exception as exc1:  # noqa: BLE001
            traces.append(Trace(rec.id, rec.question, error=f"{type(exc1).__name__}: {exc1}"))
    return traces

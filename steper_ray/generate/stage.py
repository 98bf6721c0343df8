"""TeacherStage: the Ray Data UDF of teacher generation. Each call runs the step-wise loop over a
batch of questions (ReasonerStage), filters the traces and returns one row per question: the
trace (TRACE_SCHEMA) with its step-wise examples in an ``examples`` column. Plain Python: it runs
without Ray too."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from steper_ray.config import FilterConfig
from steper_ray.data.records import QuestionRecord
from steper_ray.generate.examples import trace_examples
from steper_ray.generate.filter import drop_reason
from steper_ray.generate.store import TEACHER_ROW_SCHEMA
from steper_ray.reasoning.loop import Trace
from steper_ray.reasoning.stage import ANY_DATASET, ReasonerStage


class TeacherStage(ReasonerStage):
    def __init__(self, generate: dict[str, Any], reasoning: dict[str, Any], index: str, k: int,
                 demos: dict[str, list[dict[str, Any]]] | None = None):
        super().__init__(generate["teacher"], "teacher", reasoning, {ANY_DATASET: index}, k, demos)
        self.filter = FilterConfig(**generate["filter"])

    def rows(self, pairs: list[tuple[QuestionRecord, Trace]]) -> pa.Table:
        rows = []
        for rec, trace in pairs:
            reason = drop_reason(trace, rec.answers, self.filter)
            rows.append({**trace.to_dict(), "question_id": rec.id, "dataset": rec.dataset, "answers": rec.answers,
                         "kept": reason is None, "drop_reason": reason,
                         "examples": trace_examples(trace) if reason is None else []})
        return pa.Table.from_pylist(rows, schema=TEACHER_ROW_SCHEMA)

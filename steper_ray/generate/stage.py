"""TeacherStage: the Ray Data UDF of teacher generation. Each call runs the step-wise loop over a
batch of questions (ReasonerStage), filters the traces and returns one row per question with its
step-wise examples. Plain Python: it runs without Ray too."""

from __future__ import annotations

import json
from typing import Any

from steper_ray.config import FilterConfig
from steper_ray.data.records import QuestionRecord
from steper_ray.generate.examples import trace_examples
from steper_ray.generate.filter import drop_reason
from steper_ray.reasoning.loop import Trace
from steper_ray.reasoning.stage import ANY_DATASET, ReasonerStage


class TeacherStage(ReasonerStage):
    def __init__(self, generate: dict[str, Any], reasoning: dict[str, Any], index: str, k: int,
                 demos: dict[str, list[dict[str, Any]]] | None = None):
        super().__init__(generate["teacher"], "teacher", reasoning, {ANY_DATASET: index}, k, demos)
        self.filter = FilterConfig(**generate["filter"])

    def rows(self, pairs: list[tuple[QuestionRecord, Trace]]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"question_id": [], "trace": [], "examples": []}
        for rec, trace in pairs:
            reason = drop_reason(trace, rec.answers, self.filter)
            row = {**trace.to_dict(), "dataset": rec.dataset, "answers": rec.answers,
                   "kept": reason is None, "drop_reason": reason}
            rows["question_id"].append(rec.id)
            rows["trace"].append(json.dumps(row))
            rows["examples"].append(json.dumps(trace_examples(trace) if reason is None else []))
        return rows

"""EvalStage: the Ray Data UDF of evaluation. Each call runs the step-wise loop over a batch of
questions (ReasonerStage, one retriever per dev set) and returns one scored prediction per
question (PREDICTION_SCHEMA). Plain Python: it runs without Ray too."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from steper_ray.data.records import QuestionRecord
from steper_ray.evaluate.scoring import PREDICTION_SCHEMA, prediction_row
from steper_ray.reasoning.loop import Trace
from steper_ray.reasoning.stage import ReasonerStage


class EvalStage(ReasonerStage):
    def __init__(self, model: dict[str, Any], prompt: str, reasoning: dict[str, Any], indexes: dict[str, str],
                 k: int, demos: dict[str, list[dict[str, Any]]] | None = None):
        super().__init__(model, prompt, reasoning, indexes, k, demos)

    def rows(self, pairs: list[tuple[QuestionRecord, Trace]]) -> pa.Table:
        return pa.Table.from_pylist([prediction_row(trace, rec) for rec, trace in pairs], schema=PREDICTION_SCHEMA)

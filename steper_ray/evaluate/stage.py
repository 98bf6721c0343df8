"""EvalStage: the Ray Data UDF of evaluation. Each call runs the step-wise loop over a batch of
questions (ReasonerStage, one retriever per dev set) and returns one scored prediction per
question. Plain Python: it runs without Ray too."""

from __future__ import annotations

import json
from typing import Any

from steper_ray.data.records import QuestionRecord
from steper_ray.evaluate.scoring import prediction_row
from steper_ray.reasoning.loop import Trace
from steper_ray.reasoning.stage import ReasonerStage


class EvalStage(ReasonerStage):
    def __init__(self, model: dict[str, Any], prompt: str, reasoning: dict[str, Any], indexes: dict[str, str],
                 k: int, demos: dict[str, list[dict[str, Any]]] | None = None):
        super().__init__(model, prompt, reasoning, indexes, k, demos)

    def rows(self, pairs: list[tuple[QuestionRecord, Trace]]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"question_id": [], "prediction": []}
        for rec, trace in pairs:
            rows["question_id"].append(rec.id)
            rows["prediction"].append(json.dumps(prediction_row(trace, rec)))
        return rows

"""One prediction row per question, and per-dataset metrics over those rows. Plain data only."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from steper_ray.data.records import QuestionRecord
from steper_ray.evaluate.metrics import answer_scores, gold_key, mean
from steper_ray.reasoning.loop import Trace


_STRINGS = pa.list_(pa.string())
PREDICTION_STEP = pa.struct([
    ("step", pa.int64()), ("task", pa.string()), ("query", pa.string()), ("passage_ids", _STRINGS),
    ("reasoning", pa.string()), ("num_tokens", pa.int64()), ("notes", _STRINGS),
])
# One evaluated question (``prediction_row``), as the actors return it and predictions/*.jsonl holds it.
PREDICTION_SCHEMA = pa.schema([
    ("question_id", pa.string()), ("dataset", pa.string()), ("question", pa.string()), ("answers", _STRINGS),
    ("prediction", pa.string()), ("marked", pa.bool_()), ("em", pa.float64()), ("f1", pa.float64()),
    ("acc", pa.float64()), ("recall", pa.float64()), ("num_steps", pa.int64()), ("num_tokens", pa.int64()),
    ("steps", pa.list_(PREDICTION_STEP)), ("error", pa.string()), ("failure", pa.string()),
])


def prediction_row(trace: Trace, record: QuestionRecord) -> dict[str, Any]:
    """What the model did on one question and how it scored. Recall counts the gold paragraphs
    retrieved at any step, by id or by content (``gold_key``) for the passages the model saw (None when the dataset has no paragraph annotation)."""
    gold = set(record.gold_ids)
    retrieved = [pid for s in trace.steps for pid in s.retrieved_ids]
    retrieved += [gold_key(p.id, p.title, p.text, gold) for p in trace.passages]
    scores = answer_scores(trace.answer or "", record.answers) if record.answers else {"em": None, "f1": None, "acc": None}
    return {
        "question_id": record.id,
        "dataset": record.dataset,
        "question": record.question,
        "answers": record.answers,
        "prediction": trace.answer,
        "marked": trace.answer is not None,  # the output closed with an answer marker
        **scores,
        "recall": len(gold & set(retrieved)) / len(gold) if gold else None,
        "num_steps": len(trace.steps),
        "num_tokens": trace.num_tokens,
        "steps": [{"step": s.step, "task": s.task, "query": s.query, "passage_ids": s.retrieved_ids,
                   "reasoning": s.output, "num_tokens": s.num_tokens, "notes": s.notes} for s in trace.steps],
        "error": trace.error,
        "failure": trace.failure,
    }


def dataset_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """EM / F1 / Acc / recall / mean steps / tokens per question over one dataset's rows. A
    question that errored scored against an empty answer: it counts as wrong, not as missing."""
    def avg(key: str) -> float | None:
        value = mean(r[key] for r in rows)
        return round(value, 4) if value is not None else None

    return {
        "questions": len(rows),
        "errors": sum(r["error"] is not None for r in rows),
        "failures": sum(r.get("failure") is not None for r in rows),
        "marked": round(mean(float(r.get("marked", False)) for r in rows) or 0.0, 4),
        "em": avg("em"),
        "f1": avg("f1"),
        "acc": avg("acc"),
        "recall": avg("recall"),
        "mean_steps": round(mean(float(r["num_steps"]) for r in rows) or 0.0, 3),
        "tokens_per_question": round(mean(float(r["num_tokens"]) for r in rows) or 0.0, 1),
    }

"""Scoring of predictions, and the plain AnswerService behind the endpoint (no Ray)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from steper_ray.data.records import QuestionRecord
from steper_ray.evaluate.scoring import dataset_metrics, prediction_row
from steper_ray.reasoning.generators.protocol import Generation, GenRequest
from steper_ray.reasoning.loop import StepRecord, Trace
from steper_ray.retrieval.protocol import Hit
from steper_ray.serve.service import AnswerService


def _step(step: int, task: str, ids: list[str], out: str, tokens: int) -> StepRecord:
    return StepRecord(step, task, f"q{step}", ids, "p", "sp", out, tokens)


def _record(qid: str, answers: list[str], gold: list[str]) -> QuestionRecord:
    return QuestionRecord(id=qid, question=f"question {qid}", answers=answers, dataset="d", gold_ids=gold)


def test_prediction_rows_and_dataset_metrics() -> None:
    right = Trace("a", "question a", steps=[_step(1, "init", ["g1", "x"], "s1", 5),
                                            _step(2, "agg", ["x", "y"], "So the answer is: Paris.", 7)],
                  answer="Paris")
    partial = Trace("b", "question b", steps=[_step(1, "init", ["g2"], "s", 3),
                                              _step(2, "agg", ["g3"], "So the answer is: New York City.", 4)],
                    answer="New York City")
    broken = Trace("c", "question c", steps=[_step(1, "init", ["z"], "s", 2)], error="prompt too long")
    rows = [
        prediction_row(right, _record("a", ["Paris"], ["g1", "g9"])),
        prediction_row(partial, _record("b", ["York"], ["g2", "g3"])),
        prediction_row(broken, _record("c", ["Rome"], [])),
    ]
    assert [(r["em"], r["acc"], r["recall"]) for r in rows] == [(1.0, 1.0, 0.5), (0.0, 1.0, 1.0), (0.0, 0.0, None)]
    assert rows[1]["f1"] == pytest.approx(0.5)  # "new york city" vs "york"
    assert rows[0]["steps"][1] == {"step": 2, "task": "agg", "query": "q2", "passage_ids": ["x", "y"],
                                   "reasoning": "So the answer is: Paris.", "num_tokens": 7, "notes": []}
    assert [r["marked"] for r in rows] == [True, True, False]
    m = dataset_metrics(rows)
    assert m == {"questions": 3, "errors": 1, "failures": 0, "marked": round(2 / 3, 4), "em": round(1 / 3, 4), "f1": round(1.5 / 3, 4),
                 "acc": round(2 / 3, 4), "recall": 0.75, "mean_steps": round(5 / 3, 3),
                 "tokens_per_question": round(21 / 3, 1)}


class _Retriever:
    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [[Hit(f"{q[:3]}{i}", f"Title {q[:3]}{i}", "text", 1.0) for i in range(k)] for q in queries]

    def __len__(self) -> int:
        return 10


class _Generator:
    def __init__(self) -> None:
        self.steps = 0

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        self.steps += 1
        return [Generation("So the answer is: Oslo." if r.final else f"Fact {r.step}.", 3) for r in requests]


def test_answer_service_streams_steps_then_the_answer() -> None:
    events = list(AnswerService(_Retriever(), _Generator()).stream("Capital of Norway?", max_steps=3, k=2))
    assert [e["event"] for e in events] == ["step", "step", "step", "answer"]
    final = events[-1]["data"]
    assert final["answer"] == "Oslo" and final["error"] is None and final["latency_ms"] >= 0
    assert [e["data"] for e in events[:-1]] == final["steps"]
    assert final["steps"][0] == {"step": 1, "task": "init", "query": "Capital of Norway?",
                                 "passages": [{"id": "Cap0", "title": "Title Cap0"}, {"id": "Cap1", "title": "Title Cap1"}],
                                 "reasoning": "Fact 1."}
    assert [s["query"] for s in final["steps"]] == ["Capital of Norway?", "Fact 1.", "Fact 2."]
    assert AnswerService(_Retriever(), _Generator()).answer("Capital of Norway?", 3, 2)["steps"] == final["steps"]

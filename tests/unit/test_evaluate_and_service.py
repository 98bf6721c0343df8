"""Scoring of predictions, and the plain AnswerService behind the endpoint (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from steper_ray.data.records import QuestionRecord
from steper_ray.evaluate.scoring import dataset_metrics, prediction_row
from steper_ray.reasoning.generators.protocol import Generation, GenRequest
from steper_ray.reasoning.loop import StepRecord, Trace
from steper_ray.retrieval.protocol import Hit
from steper_ray.reasoning.async_loop import LoopStats
from steper_ray.reasoning.generators.batching import BatchingGenerator
from steper_ray.serve.service import AnswerService, ServiceUnavailable, failure_of, run_with_deadline


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


class _AsyncRetriever:
    def __init__(self) -> None:
        self.inner = _Retriever()

    async def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        await asyncio.sleep(0)
        return self.inner.search(queries, k)


def test_the_async_driver_gives_the_sync_loops_events() -> None:
    # the reasoner deployment's path (machine awaited on an event loop) and evaluation's (sync)
    sync = list(AnswerService(_Retriever(), _Generator()).stream("Capital of Norway?", max_steps=3, k=2))

    async def run() -> tuple[list[dict[str, object]], LoopStats]:
        stats = LoopStats()
        service = AnswerService(_AsyncRetriever(), BatchingGenerator(_Generator()))
        return [e async for e in service.astream("Capital of Norway?", 3, 2, None, stats)], stats

    events, stats = asyncio.run(run())
    strip = [{**e, "data": {k: v for k, v in e["data"].items() if k != "latency_ms"}} for e in (*sync, *events)]
    assert strip[:len(sync)] == strip[len(sync):]
    assert len(stats.search_ms) == len(stats.generate_ms) == 3 and stats.completion_tokens == 9
    assert events[-1]["data"]["usage"]["completion_tokens"] == 9


class _SurrogateSafe:
    """A generator that raises for a whole batch when one prompt is bad (what tokenising the
    whole batch at once did), and works request by request."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        self.calls.append(len(requests))
        if any("\ud800" in r.prompt for r in requests):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return [Generation(f"ok {r.prompt}", 2) for r in requests]


def test_batching_generator_batches_callers_and_isolates_a_failing_request() -> None:
    inner = _SurrogateSafe()
    batching = BatchingGenerator(inner, max_batch=8, wait_s=0.05)

    async def run() -> list[list[Generation]]:
        prompts = ["a", "b", "bad \ud800", "c"]
        return list(await asyncio.gather(*(batching.agenerate([GenRequest(p)]) for p in prompts)))

    out = [g for gs in asyncio.run(run()) for g in gs]
    assert [g.text for g in out] == ["ok a", "ok b", "", "ok c"]
    assert out[2].error is not None and "TypeError" in out[2].error and out[2].finish_reason == "error"
    assert inner.calls[0] == 4 and inner.calls[1:] == [1, 1, 1, 1]  # one batch, then one by one
    batching.close()


def test_a_deadline_ends_the_stream_with_an_error_event() -> None:
    class _Stuck:
        async def agenerate(self, requests: Sequence[GenRequest]) -> list[Generation]:
            await asyncio.sleep(60)
            return []

    async def run() -> list[dict[str, object]]:
        service = AnswerService(_AsyncRetriever(), _Stuck())
        return [e async for e in run_with_deadline(service.astream("q", 3, 2), 0.05)]

    assert asyncio.run(run()) == [{"event": "error", "data": {
        "kind": "timeout", "message": "the request ran past its time limit of 0.05 s"}}]
    assert failure_of(ServiceUnavailable("down"), 1.0) == {"kind": "unavailable", "message": "down"}
    assert failure_of(KeyError("x"), 1.0)["kind"] == "internal"


def test_an_answer_without_the_marker_says_why_there_is_none() -> None:
    class NeverAnswers:
        def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
            return [Generation(f"Fact {r.step}.", 3) for r in requests]

    final = AnswerService(_Retriever(), NeverAnswers()).answer("Capital of Norway?", 3, 2)
    assert final["answer"] is None and len(final["steps"]) == 3
    assert final["error"] == "no answer after 3 steps: the model never closed a step with 'So the answer is:'"

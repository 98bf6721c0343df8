"""AnswerService: one question in, the student's steps and answer out. Plain Python (the same
StepwiseReasoner the teacher and the evaluation use); the Serve reasoner deployment and the
in-process side of `steper-ray bench serving` both call it.

Two drivers of the same loop: ``stream`` / ``answer`` call a Retriever and a Generator
synchronously (as evaluation does); ``astream`` / ``aanswer`` await an AsyncRetriever and an
AsyncGenerator (``steper_ray.reasoning.async_loop``) on the caller's event loop. Both produce
the same events:

- ``{"event": "step", "data": STEP}`` per step as it is produced, STEP being ``{"step", "task",
  "query", "passages": [{"id", "title"}], "reasoning"}``;
- then ``{"event": "answer", "data": {"answer", "steps", "latency_ms", "error", "usage":
  {"prompt_tokens", "completion_tokens", "total_tokens"}}}``.

Failures that are not the model's (a retriever that is down, a deadline, a bug) raise; the
reasoner deployment turns them into failure kinds (``failure_of``) and the HTTP edge into
statuses (``steper_ray.serve.errors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from steper_ray.config import ReasoningConfig
from steper_ray.reasoning.async_loop import AsyncGenerator, AsyncRetriever, LoopStats, drive
from steper_ray.reasoning.answer import ANSWER_MARKER
from steper_ray.reasoning.generators.protocol import Generation, Generator, GenRequest, Sampling
from steper_ray.reasoning.loop import Question, StepRecord, Trace
from steper_ray.reasoning.prompts import PromptBuilder
from steper_ray.reasoning.stage import reasoner
from steper_ray.retrieval.protocol import Hit, Retriever

log = logging.getLogger(__name__)

FailureKind = Literal["unavailable", "timeout", "internal"]


@dataclass(frozen=True)
class AnswerSettings:
    """One request's loop settings, after the API's defaults and limits: most steps, passages
    per step, the deadline (seconds) and the steps' sampling overrides."""

    max_steps: int
    k: int
    timeout_s: float
    sampling: Sampling = field(default_factory=Sampling)


class ServiceUnavailable(Exception):
    """A dependency (the retriever deployment) is down or too slow: failure kind 'unavailable'."""


def failure_of(exc: BaseException, timeout_s: float) -> dict[str, str]:
    """``{"kind", "message"}`` for an exception that ended a request: 'unavailable' (a
    dependency), 'timeout' (the request's deadline, ``TimeoutError``) or 'internal'."""
    if isinstance(exc, ServiceUnavailable):
        return {"kind": "unavailable", "message": str(exc)}
    if isinstance(exc, TimeoutError):
        return {"kind": "timeout", "message": f"the request ran past its time limit of {timeout_s:g} s"}
    log.exception("request failed", exc_info=exc)
    return {"kind": "internal", "message": f"internal error ({type(exc).__name__}); the server log has the details"}


class _Titles:
    """The title of every passage a request's searches returned, for the response."""

    def __init__(self) -> None:
        self.titles: dict[str, str] = {}

    def add(self, hits: list[list[Hit]]) -> list[list[Hit]]:
        for hs in hits:
            self.titles.update((h.id, h.title) for h in hs)
        return hits


class _SyncRecorder:
    """Passes a sync retriever's and generator's calls through, recording titles and tokens."""

    def __init__(self, retriever: Retriever, generator: Generator, titles: _Titles, stats: LoopStats):
        self.retriever, self.generator, self.titles, self.stats = retriever, generator, titles, stats

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return self.titles.add(self.retriever.search(queries, k))

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        out = self.generator.generate(requests)
        self.stats.completion_tokens += sum(g.num_tokens for g in out)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in out)
        return out


class _AsyncTitles:
    def __init__(self, inner: AsyncRetriever, titles: _Titles):
        self.inner, self.titles = inner, titles

    async def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return self.titles.add(await self.inner.search(queries, k))


def step_dict(step: StepRecord, titles: dict[str, str]) -> dict[str, Any]:
    return {
        "step": step.step,
        "task": step.task,
        "query": step.query,
        "passages": [{"id": pid, "title": titles.get(pid, "")} for pid in step.retrieved_ids],
        "reasoning": step.output,
    }


def _no_answer(trace: Trace) -> str | None:
    """Why a trace that ended without an error or failure has no answer (None when it has one):
    the steps ran out before the model closed one with the answer marker."""
    if trace.answer is not None:
        return None
    return f"no answer after {len(trace.steps)} steps: the model never closed a step with {ANSWER_MARKER!r}"


def _answer_event(trace: Trace, titles: dict[str, str], stats: LoopStats, t0: float) -> dict[str, Any]:
    return {"event": "answer", "data": {
        "answer": trace.answer,
        "steps": [step_dict(s, titles) for s in trace.steps],
        "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
        "error": trace.error or trace.failure or _no_answer(trace),
        "usage": {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                  "total_tokens": stats.prompt_tokens + stats.completion_tokens},
    }}


class AnswerService:
    """``retriever`` / ``generator``: a Retriever and a Generator (``stream``, ``answer``) or an
    AsyncRetriever and an AsyncGenerator (``astream``, ``aanswer``); ``prompt``: the student's
    prompt builder (its format); ``reasoning``: the loop's settings (passage cap, step shaping,
    retries). Per request, ``max_steps``, ``k`` and ``sampling`` override."""

    def __init__(self, retriever: Any, generator: Any, prompt: PromptBuilder | None = None,
                 reasoning: ReasoningConfig | None = None):
        self.retriever = retriever
        self.generator = generator
        self.prompt = prompt or PromptBuilder.student()
        self.reasoning = reasoning or ReasoningConfig()

    def stream(self, question: str, max_steps: int, k: int, sampling: Sampling | None = None
               ) -> Iterator[dict[str, Any]]:
        """The events (module docstring), driving the loop synchronously."""
        t0 = time.perf_counter()
        titles, stats = _Titles(), LoopStats()
        recorder = _SyncRecorder(self.retriever, self.generator, titles, stats)
        loop = reasoner(recorder, recorder, self.prompt, self.reasoning, k, max_steps, sampling)
        traces = [Trace("request", question)]
        for _, step in loop.steps([Question("request", question)], traces):
            yield {"event": "step", "data": step_dict(step, titles.titles)}
        yield _answer_event(traces[0], titles.titles, stats, t0)

    def answer(self, question: str, max_steps: int, k: int, sampling: Sampling | None = None) -> dict[str, Any]:
        *_, last = self.stream(question, max_steps, k, sampling)
        return last["data"]

    async def astream(self, question: str, max_steps: int, k: int, sampling: Sampling | None = None,
                      stats: LoopStats | None = None) -> AsyncIterator[dict[str, Any]]:
        """The events, awaiting the async retriever and generator; ``stats`` (if given) gets the
        per-step timings and token counts."""
        t0 = time.perf_counter()
        titles, stats = _Titles(), stats if stats is not None else LoopStats()
        retriever: AsyncRetriever = _AsyncTitles(self.retriever, titles)
        generator: AsyncGenerator = self.generator
        loop = reasoner(None, None, self.prompt, self.reasoning, k, max_steps, sampling)
        traces = [Trace("request", question)]
        machine = loop.machine([Question("request", question)], traces)
        async for _, step in drive(machine, retriever, generator, stats):
            yield {"event": "step", "data": step_dict(step, titles.titles)}
        yield _answer_event(traces[0], titles.titles, stats, t0)

    async def aanswer(self, question: str, max_steps: int, k: int, sampling: Sampling | None = None,
                      stats: LoopStats | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {}
        async for event in self.astream(question, max_steps, k, sampling, stats):
            data = event["data"]
        return data


async def run_with_deadline(events: AsyncIterator[dict[str, Any]], timeout_s: float
                            ) -> AsyncIterator[dict[str, Any]]:
    """``events`` under one deadline (``asyncio.timeout`` around the whole run, in its own
    task, so the consumer's pace never cancels it mid-step); a failure ends the stream with
    ``{"event": "error", "data": {"kind", "message"}}`` (``failure_of``), never an exception.
    Closing this iterator cancels the run."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> None:
        try:
            async with asyncio.timeout(timeout_s):
                async for event in events:
                    queue.put_nowait(event)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the stream's last event
            queue.put_nowait({"event": "error", "data": failure_of(exc, timeout_s)})
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not task.done():
            task.cancel()

"""AnswerService: one question in, the student's steps and answer out. Plain Python (the same
StepwiseReasoner the teacher and the evaluation use); the Serve reasoner deployment and the
in-process benchmark both call it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from steper_ray.config import ReasoningConfig
from steper_ray.reasoning.generators.protocol import Generator
from steper_ray.reasoning.loop import Question, StepRecord, Trace
from steper_ray.reasoning.prompts import PromptBuilder
from steper_ray.reasoning.stage import reasoner
from steper_ray.retrieval.protocol import Hit, Retriever


class ServiceUnavailable(Exception):
    """A dependency (the retriever deployment) is down: HTTP 503."""


class DeadlineExceeded(Exception):
    """The request ran past its time limit: HTTP 504."""


class _TitleRecorder:
    """Passes searches through and remembers each hit's title for the response."""

    def __init__(self, inner: Retriever):
        self.inner = inner
        self.titles: dict[str, str] = {}

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        hits = self.inner.search(queries, k)
        for hs in hits:
            self.titles.update((h.id, h.title) for h in hs)
        return hits

    def __len__(self) -> int:
        return len(self.inner)


def step_dict(step: StepRecord, titles: dict[str, str]) -> dict[str, Any]:
    return {
        "step": step.step,
        "task": step.task,
        "query": step.query,
        "passages": [{"id": pid, "title": titles.get(pid, "")} for pid in step.retrieved_ids],
        "reasoning": step.output,
    }


class AnswerService:
    """``prompt``: the student's prompt builder (its format); ``reasoning``: the loop's settings
    (passage cap, step shaping, retries); per request ``max_steps`` and ``k`` override."""

    def __init__(self, retriever: Retriever, generator: Generator, prompt: PromptBuilder | None = None,
                 reasoning: ReasoningConfig | None = None):
        self.retriever = retriever
        self.generator = generator
        self.prompt = prompt or PromptBuilder.student()
        self.reasoning = reasoning or ReasoningConfig()

    def stream(self, question: str, max_steps: int, k: int) -> Iterator[dict[str, Any]]:
        """Events: one ``{"event": "step", ...}`` per step as it is produced, then one
        ``{"event": "answer", ...}`` with the whole response."""
        t0 = time.perf_counter()
        recorder = _TitleRecorder(self.retriever)
        loop = reasoner(recorder, self.generator, self.prompt, self.reasoning, k, max_steps)
        traces = [Trace("request", question)]
        for _, step in loop.steps([Question("request", question)], traces):
            yield {"event": "step", "data": step_dict(step, recorder.titles)}
        trace = traces[0]
        yield {"event": "answer", "data": {
            "answer": trace.answer,
            "steps": [step_dict(s, recorder.titles) for s in trace.steps],
            "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
            "error": trace.error,
        }}

    def answer(self, question: str, max_steps: int, k: int) -> dict[str, Any]:
        *_, last = self.stream(question, max_steps, k)
        return last["data"]

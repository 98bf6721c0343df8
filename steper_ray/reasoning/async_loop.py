"""The step machine driven on an event loop: the serving path's driver.

``StepwiseReasoner.machine`` yields ``Search`` and ``Generate`` requests and ``StepDone`` events
and does no I/O; ``StepwiseReasoner.run`` / ``steps`` drive it synchronously (generation and
evaluation). ``drive`` here awaits an ``AsyncRetriever`` and an ``AsyncGenerator`` instead, so
a Serve replica runs many requests' loops as coroutines on its own event loop, with no thread
per request; a deadline is one ``asyncio.timeout`` around the whole drive (cancelling it
cancels the awaited search or generation). ``as_async_retriever`` adapts a local (in-memory,
fast) Retriever for in-process use. No Ray in here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from steper_ray.reasoning.generators.protocol import Generation, GenRequest
from steper_ray.reasoning.loop import Generate, Machine, Search, StepDone, StepRecord
from steper_ray.retrieval.protocol import Hit, Retriever

log = logging.getLogger(__name__)


@runtime_checkable
class AsyncRetriever(Protocol):
    async def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query, in query order."""
        ...


@runtime_checkable
class AsyncGenerator(Protocol):
    async def agenerate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """One result per request, in order; a request's failure is its own error result
        (``Generator``'s contract), never an exception for the others."""
        ...


@dataclass
class LoopStats:
    """What one drive did. ``search_ms`` / ``generate_ms``: one entry per step (a step's
    generation time covers all its rounds, retries included), milliseconds; token counts over
    every generation call."""

    search_ms: list[float] = field(default_factory=list)
    generate_ms: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0

    def timing(self) -> dict[str, float]:
        """The drive's time in retrieval and in the engine over all its steps (ms, 0.1 ms)."""
        return {"search_ms": round(sum(self.search_ms), 1), "generate_ms": round(sum(self.generate_ms), 1)}


class _LocalRetriever:
    """A local Retriever behind the async protocol; its search runs inline (BM25 over an
    in-memory index takes well under a millisecond per query)."""

    def __init__(self, inner: Retriever):
        self.inner = inner

    async def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return self.inner.search(queries, k)


def as_async_retriever(retriever: Retriever) -> AsyncRetriever:
    return _LocalRetriever(retriever)


async def drive(machine: Machine, retriever: AsyncRetriever, generator: AsyncGenerator,
                stats: LoopStats | None = None) -> AsyncIterator[tuple[int, StepRecord]]:
    """Run ``machine`` to its end, awaiting each search and generation; yields (question
    index, step) as each step is produced. The traces are filled in place, as with
    ``StepwiseReasoner.steps``. Exceptions of the retriever (and cancellation) propagate."""
    stats = stats if stats is not None else LoopStats()
    generating = 0.0  # this step's generation time so far
    reply: Any = None
    try:
        while True:
            try:
                event = machine.send(reply)
            except StopIteration:
                return
            if isinstance(event, Search):
                if generating:
                    stats.generate_ms.append(generating)
                    generating = 0.0
                t0 = time.perf_counter()
                reply = await retriever.search(event.queries, event.k)
                stats.search_ms.append((time.perf_counter() - t0) * 1000)
            elif isinstance(event, Generate):
                t0 = time.perf_counter()
                reply = await generator.agenerate(event.requests)
                generating += (time.perf_counter() - t0) * 1000
                stats.completion_tokens += sum(g.num_tokens for g in reply)
                stats.prompt_tokens += sum(g.prompt_tokens for g in reply)
            else:
                assert isinstance(event, StepDone)
                reply = None
                yield event.index, event.step
    finally:
        if generating:
            stats.generate_ms.append(generating)
        machine.close()

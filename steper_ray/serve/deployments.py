"""Ray Serve shells: the retriever (its own deployment, CPU only; one per shard of a sharded
index) and the reasoner (the student's engine plus the loop).

The reasoner runs each request's loop as a coroutine on the replica's event loop
(``AnswerService.astream``, driving ``StepwiseReasoner.machine``): a step's retrieval awaits the
retriever deployment's handle, its generation awaits the engine. Concurrent requests' step
prompts meet in the engine: vLLM's async engine schedules all in-flight requests together
(continuous batching) for kind 'vllm'; for transformers a ``BatchingGenerator`` collects them
into batches that run on the one engine thread. A request's deadline is one ``asyncio.timeout``
around its whole loop. Failures come back as ``{"failure": {"kind", "message"}}`` (or the
stream's last ``error`` event); the ingress maps kinds to HTTP statuses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray import serve

from steper_ray.config import GeneratorConfig, ReasoningConfig, ServeConfig
from steper_ray.models.prompt_format import builder_for
from steper_ray.reasoning.async_loop import LoopStats
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.retrieval import load_index
from steper_ray.retrieval.protocol import Hit
from steper_ray.retrieval.shards import merge_topk
from steper_ray.serve.metrics import LoopMetrics
from steper_ray.serve.service import (
    AnswerService,
    AnswerSettings,
    ServiceUnavailable,
    failure_of,
    run_with_deadline,
)

log = logging.getLogger(__name__)


@serve.deployment(name="retriever")
class RetrieverDeployment:
    def __init__(self, index: str):
        # the whole index or one of its shards: the app checked the index it was given (serve_index)
        self.retriever = load_index(index, shard=True)
        # The first search compiles bm25s' numba scorer (seconds): pay it before taking traffic.
        self.retriever.search(["warm up"], 1)
        log.info("retriever: %d passages from %s", len(self.retriever), index)

    # No wait for a batch to fill: a lone request (concurrency 1) is searched at once, and the
    # queries that arrive during a search form the next batch (Serve's opportunistic batching).
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def search(self, items: list[tuple[str, int]]) -> list[list[Hit]]:
        """One (query, k) per caller; concurrent callers share one batched search."""
        k_max = max(k for _, k in items)
        hits = self.retriever.search([q for q, _ in items], k_max)
        return [hs[:k] for hs, (_, k) in zip(hits, items)]


class RetrieverHandle:
    """The retriever deployment(s) as an AsyncRetriever: one handle call per query and shard
    (each retriever batches concurrent ones), each query's shard lists merged into its top-k
    (``merge_topk``; one unsharded deployment is a single list). A deployment that does not
    answer within ``timeout_s``, or fails, is ServiceUnavailable naming it (a missing shard is
    never a silently shorter top-k); cancellation (the request's deadline) cancels the calls."""

    def __init__(self, handles: Sequence[Any], timeout_s: float):
        self.handles, self.timeout_s = list(handles), timeout_s
        self.names = [getattr(h, "deployment_name", "retriever") for h in self.handles]

    async def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        calls = [[h.search.remote((q, k)) for h in self.handles] for q in queries]
        waiting = self.names[0]  # the deployment being awaited: the one to name if it fails
        try:
            async with asyncio.timeout(self.timeout_s):
                merged = []
                for per_query in calls:
                    lists = []
                    for name, call in zip(self.names, per_query):
                        waiting = name
                        lists.append(await call)
                    merged.append(merge_topk(lists, k))
                return merged
        except TimeoutError:
            raise ServiceUnavailable(
                f"the retriever deployment {waiting!r} did not answer within {self.timeout_s:g} s (it is down or "
                "overloaded); retry later") from None
        except Exception as exc:  # noqa: BLE001 - a dead or failing retriever replica
            raise ServiceUnavailable(
                f"the retriever deployment {waiting!r} failed ({type(exc).__name__}); retry later") from None
        finally:
            for per_query in calls:
                for c in per_query:
                    c.cancel()  # no-op for the calls that finished


@serve.deployment(name="reasoner")
class ReasonerDeployment:
    def __init__(self, retrievers: list[Any], model: dict[str, Any], reasoning: dict[str, Any],
                 serve_cfg: dict[str, Any]):
        cfg = ServeConfig(**serve_cfg)
        gen_cfg = GeneratorConfig(**model)
        generator: Any
        if gen_cfg.kind == "vllm":
            from steper_ray.reasoning.generators.vllm_async import AsyncVLLMGenerator

            generator = AsyncVLLMGenerator(gen_cfg, metrics=True)
        else:
            from steper_ray.reasoning.generators.batching import BatchingGenerator

            generator = BatchingGenerator(build_generator(gen_cfg), cfg.batch_max_size, cfg.batch_wait_s)
        self.generator = generator
        # the prompt format the student was trained in
        self.service = AnswerService(RetrieverHandle(retrievers, cfg.retriever_timeout_s), generator,
                                     builder_for(gen_cfg, "student"), ReasoningConfig(**reasoning))
        self.metrics = LoopMetrics()

    def _events(self, question: str, s: AnswerSettings, stats: LoopStats) -> AsyncIterator[dict[str, Any]]:
        return self.service.astream(question, s.max_steps, s.k, s.sampling, stats)

    async def answer(self, question: str, settings: AnswerSettings) -> dict[str, Any]:
        """``{"data": ANSWER, "timing": {"search_ms", "generate_ms"}}`` (the loop's time in
        retrieval and in the engine, all steps, ms) or ``{"failure": {"kind", "message"}}``."""
        stats, steps = LoopStats(), None
        try:
            async with asyncio.timeout(settings.timeout_s):
                data = await self.service.aanswer(question, settings.max_steps, settings.k, settings.sampling, stats)
            steps = len(data["steps"])
            return {"data": data, "timing": stats.timing()}
        except Exception as exc:  # noqa: BLE001 - every failure is an answer with its kind
            return {"failure": failure_of(exc, settings.timeout_s)}
        finally:
            self.metrics.loop(stats, steps)

    async def stream(self, question: str, settings: AnswerSettings) -> AsyncIterator[dict[str, Any]]:
        """Step events as the loop produces them, then the answer (or one error event).

        The loop's metrics are recorded before the answer event leaves, so a client holding
        the answer finds its request counted (not only once this generator is closed)."""
        stats, recorded = LoopStats(), False
        try:
            async for event in run_with_deadline(self._events(question, settings, stats), settings.timeout_s):
                if event["event"] == "answer":
                    self.metrics.loop(stats, len(event["data"]["steps"]))
                    recorded = True
                yield event
        finally:
            if not recorded:
                self.metrics.loop(stats, None)

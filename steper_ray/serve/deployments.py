"""Ray Serve shells: the retriever (its own deployment, CPU only) and the reasoner (the student's
engine plus the loop). The loop is synchronous, so it runs in a worker thread; its retrieval and
generation calls hop back onto the replica's event loop, where concurrent requests' step prompts
are batched together before they reach the engine: by vLLM's async engine (continuous
batching) for kind 'vllm', by ``serve.batch`` (dynamic batching) for transformers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ray import serve

from steper_ray.config import GeneratorConfig, ReasoningConfig, ServeConfig
from steper_ray.models.prompt_format import builder_for
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.reasoning.generators.protocol import Generation, GenRequest
from steper_ray.retrieval import load_index
from steper_ray.retrieval.protocol import Hit
from steper_ray.serve.service import AnswerService, DeadlineExceeded, ServiceUnavailable

log = logging.getLogger(__name__)

_STATUS = {ServiceUnavailable: 503, DeadlineExceeded: 504}  # HTTP status of each failure


@serve.deployment(name="retriever")
class RetrieverDeployment:
    def __init__(self, index: str):
        self.retriever = load_index(index)
        # The first search compiles bm25s' numba scorer (seconds): pay it before taking traffic.
        self.retriever.search(["warm up"], 1)
        log.info("retriever: %d passages from %s", len(self.retriever), index)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def search(self, items: list[tuple[str, int]]) -> list[list[Hit]]:
        """One (query, k) per caller; concurrent callers share one batched search."""
        k_max = max(k for _, k in items)
        hits = self.retriever.search([q for q, _ in items], k_max)
        return [hs[:k] for hs, (_, k) in zip(hits, items)]


class _Bridge:
    """Retriever and Generator for the loop's worker thread: each call runs a coroutine on the
    replica's event loop and waits for it, within the request's deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float,
                 search: Callable[[Sequence[str], int, float], Awaitable[list[list[Hit]]]],
                 generate_one: Callable[[GenRequest], Awaitable[Generation]]):
        self.loop, self.deadline = loop, deadline
        self._search, self._generate_one = search, generate_one

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request ran past its time limit")
        return left

    def _wait(self, coro: Awaitable[Any]) -> Any:
        left = self._left()
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout=left)
        except FutureTimeout:
            fut.cancel()
            raise DeadlineExceeded("the request ran past its time limit") from None

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return self._wait(self._search(queries, k, self._left()))

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        async def all_of() -> list[Generation]:
            return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

        return self._wait(all_of())

    def __len__(self) -> int:
        return 0


@serve.deployment(name="reasoner")
class ReasonerDeployment:
    def __init__(self, retriever: Any, model: dict[str, Any], reasoning: dict[str, Any],
                 serve_cfg: dict[str, Any], max_ongoing: int):
        self.cfg = ServeConfig(**serve_cfg)
        self.reasoning = ReasoningConfig(**reasoning)
        self.retriever = retriever  # DeploymentHandle of RetrieverDeployment
        gen_cfg = GeneratorConfig(**model)
        self.prompt = builder_for(gen_cfg, "student")  # the format the student was trained in
        self.async_engine = None
        if gen_cfg.kind == "vllm":
            # vLLM's async engine batches in-flight requests itself (continuous batching).
            from steper_ray.reasoning.generators.vllm_async import AsyncVLLMGenerator

            self.async_engine = AsyncVLLMGenerator(gen_cfg)
        else:
            self.generator = build_generator(gen_cfg)
        # Two pools, never the default one: request loops block waiting on the engine, so if
        # both shared one pool, a full pool of loops would starve the engine call (deadlock).
        self._loops = ThreadPoolExecutor(max_workers=max_ongoing, thread_name_prefix="loop")
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._generate_batch.set_max_batch_size(self.cfg.batch_max_size)
        self._generate_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _generate_batch(self, requests: list[GenRequest]) -> list[Generation]:
        # One engine call for the step prompts of all requests in flight; the engine blocks,
        # so it runs off the event loop, on its own thread (batches run one at a time).
        return await asyncio.get_running_loop().run_in_executor(self._engine, self.generator.generate, requests)

    async def _search(self, queries: Sequence[str], k: int, budget: float) -> list[list[Hit]]:
        wait = min(self.cfg.retriever_timeout_s, budget)
        calls = [self.retriever.search.remote((q, k)) for q in queries]

        async def collect() -> list[list[Hit]]:
            return [await c for c in calls]

        try:
            return await asyncio.wait_for(collect(), wait)
        except asyncio.TimeoutError:
            for c in calls:
                c.cancel()
            if wait < self.cfg.retriever_timeout_s:
                raise DeadlineExceeded("the request ran past its time limit") from None
            raise ServiceUnavailable(
                f"the retriever deployment did not answer within {self.cfg.retriever_timeout_s:g} s "
                "(it is down or overloaded); retry later") from None
        except Exception as exc:  # noqa: BLE001 - a dead or failing retriever replica
            raise ServiceUnavailable(f"the retriever deployment failed: {type(exc).__name__}; retry later") from None

    def _service(self, timeout_s: float) -> AnswerService:
        generate_one = self.async_engine.generate_one if self.async_engine else self._generate_batch
        bridge = _Bridge(asyncio.get_running_loop(), time.monotonic() + timeout_s, self._search, generate_one)
        return AnswerService(bridge, bridge, self.prompt, self.reasoning)

    async def answer(self, question: str, max_steps: int, k: int, timeout_s: float) -> dict[str, Any]:
        """The response body, or ``{"error_status": 503|504, "detail": ...}``."""
        service = self._service(timeout_s)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._loops, service.answer, question, max_steps, k)
        except (ServiceUnavailable, DeadlineExceeded) as exc:
            return {"error_status": _STATUS[type(exc)], "detail": str(exc)}

    async def stream(self, question: str, max_steps: int, k: int, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """Step events as the loop produces them, then the answer (or one error event)."""
        service = self._service(timeout_s)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def work() -> None:
            try:
                for event in service.stream(question, max_steps, k):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except (ServiceUnavailable, DeadlineExceeded) as exc:
                error = {"status": _STATUS[type(exc)], "detail": str(exc)}
                loop.call_soon_threadsafe(queue.put_nowait, {"event": "error", "data": error})
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(self._loops, work)
        while (event := await queue.get()) is not None:
            yield event
        await worker

"""BatchingGenerator: a blocking Generator (transformers) behind the async protocol, with
dynamic batching.

Concurrent callers on one event loop (the requests in flight on a Serve replica) each await
``agenerate``; their step requests are queued and one worker takes up to ``max_batch``
requests, waiting at most ``wait_s`` for the batch to fill, and runs ``generator.generate`` on
the batch in the one engine thread (the engine blocks; the event loop must not). Batches run
one at a time. A request's result goes to its own caller only; if the engine raises for a whole
batch, every request of the batch is retried alone, so a bad request fails by itself.

vLLM's async engine does not need this: it schedules in-flight requests itself
(``AsyncVLLMGenerator``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from steper_ray.reasoning.generators.protocol import Generation, Generator, GenRequest, failed

log = logging.getLogger(__name__)


class BatchingGenerator:
    def __init__(self, generator: Generator, max_batch: int = 16, wait_s: float = 0.005):
        self.generator = generator
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._queue: asyncio.Queue[tuple[GenRequest, asyncio.Future[Generation]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # engine calls made (for tests and benchmarks)

    async def agenerate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Results in request order; the requests join whatever batch is forming."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        futures = []
        for req in requests:
            fut: asyncio.Future[Generation] = loop.create_future()
            self._queue.put_nowait((req, fut))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    async def _run(self, queue: asyncio.Queue[tuple[GenRequest, asyncio.Future[Generation]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0 and queue.empty():
                    break
                try:
                    batch.append(queue.get_nowait() if left <= 0 else await asyncio.wait_for(queue.get(), left))
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
            live = [(req, fut) for req, fut in batch if not fut.done()]  # callers past their deadline left
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._engine, self._generate, [req for req, _ in live])
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any batch
                results = [failed(f"generation failed: {type(exc).__name__}: {exc}")] * len(live)
            self.batches += 1
            for (_, fut), res in zip(live, results):
                if not fut.done():
                    fut.set_result(res)

    def _generate(self, requests: list[GenRequest]) -> list[Generation]:
        """On the engine thread: the batch, or request by request if the engine raised."""
        try:
            out = self.generator.generate(requests)
            if len(out) == len(requests):
                return out
            raise RuntimeError(f"generator returned {len(out)} results for {len(requests)} requests")
        except Exception as exc:  # noqa: BLE001 - a generator that broke its contract
            log.warning("batch of %d failed (%s: %s); retrying request by request", len(requests),
                        type(exc).__name__, exc)
        results = []
        for req in requests:
            try:
                results.append(self.generator.generate([req])[0])
            except Exception as exc1:  # noqa: BLE001
                results.append(failed(f"generation failed: {type(exc1).__name__}: {exc1}"))
        return results

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._engine.shutdown(wait=False)

"""AsyncVLLMGenerator: vLLM's async engine for serving. Each step prompt is its own engine
request; the engine's scheduler batches whatever requests are in flight (continuous batching),
so concurrent HTTP requests share forward passes without waiting to fill a batch.

With ``metrics=True`` (inside a Serve replica) the engine's own statistics (requests running
and waiting, KV-cache use, prefix-cache hits, time to first token, tokens) are exported through
Ray's metrics as ``ray_vllm_*`` series, beside the application's own."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from steper_ray.config import GeneratorConfig
from steper_ray.reasoning.generators.protocol import Generation, GenRequest, failed
from steper_ray.reasoning.generators.vllm_engine import (
    encode_request,
    engine_kwargs,
    request_params,
    sampling_params,
    to_generation,
)

log = logging.getLogger(__name__)


class AsyncVLLMGenerator:
    def __init__(self, cfg: GeneratorConfig, metrics: bool = False):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        assert cfg.model is not None
        kwargs = engine_kwargs(cfg.model, cfg.tensor_parallel_size, cfg.dtype, cfg.max_model_len,
                               cfg.gpu_memory_utilization, cfg.enable_prefix_caching, cfg.seed)
        stat_loggers = None
        if metrics:
            from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

            stat_loggers = [RayPrometheusStatLogger]
        self.engine: Any = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs, disable_log_stats=not metrics),
                                                stat_loggers=stat_loggers)
        self.tokenizer = self.engine.get_tokenizer()
        self.max_model_len = cfg.max_model_len
        self.cfg = cfg
        self.params = sampling_params(cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)

    async def generate_one(self, req: GenRequest) -> Generation:
        """One step; never raises for the request's sake (an error result instead). Cancelling
        the caller aborts the engine request."""
        ids = encode_request(self.tokenizer, req, self.max_model_len)
        if isinstance(ids, Generation):
            return ids
        params = request_params(self.params, req, self.cfg.top_p, self.cfg.max_tokens, self.cfg.seed)
        last = None
        try:
            async for out in self.engine.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
                last = out
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed request must not take the replica down
            return failed(f"engine error: {type(exc).__name__}: {exc}")
        if last is None:
            return failed("engine returned no output")
        return to_generation(last)

    async def agenerate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Results in request order, all requests in flight together."""
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def shutdown(self) -> None:
        """Stop the engine's core process and free the engine now. AsyncLLM also shuts itself
        down in ``__del__``; left to interpreter exit, that runs after vLLM's module globals are
        gone and prints a TypeError traceback."""
        engine, self.engine = self.engine, None
        if engine is None:
            return
        engine.shutdown()
        del engine
        gc.collect()

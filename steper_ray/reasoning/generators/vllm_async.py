"""AsyncVLLMGenerator: vLLM's async engine for serving. Each step prompt is its own engine
request; the engine's scheduler batches whatever requests are in flight (continuous batching),
so concurrent HTTP requests share forward passes without waiting to fill a batch."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from steper_ray.config import GeneratorConfig
from steper_ray.reasoning.generators.protocol import Generation, GenRequest, failed
from steper_ray.reasoning.generators.vllm_engine import (
    engine_kwargs,
    request_params,
    sampling_params,
    to_generation,
    too_long,
)
from steper_ray.reasoning.prompts import encode_prompt

log = logging.getLogger(__name__)


class AsyncVLLMGenerator:
    def __init__(self, cfg: GeneratorConfig):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        assert cfg.model is not None
        kwargs = engine_kwargs(cfg.model, cfg.tensor_parallel_size, cfg.dtype, cfg.max_model_len,
                               cfg.gpu_memory_utilization, cfg.enable_prefix_caching, cfg.seed)
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        self.tokenizer = self.engine.get_tokenizer()
        self.max_model_len = cfg.max_model_len
        self.cfg = cfg
        self.params = sampling_params(cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)

    async def generate_one(self, req: GenRequest) -> Generation:
        ids = encode_prompt(self.tokenizer, req.prompt).input_ids
        if (error := too_long(ids, self.max_model_len)) is not None:
            return error
        params = request_params(self.params, req, self.cfg.top_p, self.cfg.max_tokens, self.cfg.seed)
        last = None
        try:
            async for out in self.engine.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
                last = out
        except Exception as exc:  # noqa: BLE001 - one failed request must not take the replica down
            return failed(f"engine error: {type(exc).__name__}: {exc}")
        assert last is not None
        return to_generation(last)

    async def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        import asyncio

        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def shutdown(self) -> None:
        self.engine.shutdown()

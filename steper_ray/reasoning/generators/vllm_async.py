"""AsyncVLLMGenerator: vLLM's async engine for serving. Each step prompt is its own engine
request; the engine's scheduler batches whatever requests are in flight (continuous batching),
so concurrent HTTP requests share forward passes without waiting to fill a batch."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from steper_ray.config import GeneratorConfig
from steper_ray.reasoning.generators.protocol import Generation, GenRequest, first_line
from steper_ray.reasoning.generators.vllm_engine import _on_cpu
from steper_ray.reasoning.prompts import COMPLETION_END
from steper_ray.reasoning.vllm_env import prepare_vllm

log = logging.getLogger(__name__)


class AsyncVLLMGenerator:
    def __init__(self, cfg: GeneratorConfig):
        cpu = _on_cpu()
        prepare_vllm(cpu=cpu)
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.v1.engine.async_llm import AsyncLLM

        assert cfg.model is not None
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "dtype": "float32" if cpu and cfg.dtype == "auto" else cfg.dtype,
            "max_model_len": cfg.max_model_len,
            "enable_prefix_caching": cfg.enable_prefix_caching,
            "seed": cfg.seed,
            "enforce_eager": cpu,
        }
        if not cpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        self.tokenizer = self.engine.get_tokenizer()
        self.max_model_len = cfg.max_model_len
        self.params = SamplingParams(
            temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
            stop=[COMPLETION_END], seed=cfg.seed if cfg.temperature > 0 else None,
        )

    async def generate_one(self, req: GenRequest) -> Generation:
        ids = self.tokenizer(req.prompt).input_ids
        if len(ids) + 1 > self.max_model_len:
            return Generation("", 0, f"prompt has {len(ids)} tokens, over max_model_len {self.max_model_len}")
        last = None
        try:
            async for out in self.engine.generate({"prompt_token_ids": ids}, self.params, uuid.uuid4().hex):
                last = out
        except Exception as exc:  # noqa: BLE001 - one failed request must not take the replica down
            return Generation("", 0, f"engine error: {type(exc).__name__}: {exc}")
        assert last is not None
        c = last.outputs[0]
        return Generation(first_line(c.text), len(c.token_ids))

    async def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        import asyncio

        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def shutdown(self) -> None:
        self.engine.shutdown()

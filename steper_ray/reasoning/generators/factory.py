"""Build the configured generator. Engines are imported here, where used."""

from __future__ import annotations

from collections.abc import Sequence

from steper_ray.config import GeneratorConfig
from steper_ray.data.records import QuestionRecord
from steper_ray.reasoning.generators.protocol import Generator


def build_generator(cfg: GeneratorConfig, records: Sequence[QuestionRecord] = ()) -> Generator:
    """``records`` feed the evidence teacher (it writes from their annotations). A model name
    such as ``smollm2`` is prepared into a local directory first."""
    from steper_ray.models.prepare import resolved

    cfg = resolved(cfg)
    if cfg.kind == "evidence":
        from steper_ray.reasoning.generators.evidence import EvidenceGenerator

        return EvidenceGenerator(records)
    assert cfg.model is not None  # validated by GeneratorConfig
    if cfg.kind == "vllm":
        from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator

        return VLLMGenerator(
            cfg.model, cfg.tensor_parallel_size, cfg.dtype, cfg.max_model_len,
            cfg.gpu_memory_utilization, cfg.enable_prefix_caching, cfg.temperature, cfg.top_p,
            cfg.max_tokens, cfg.seed,
        )
    if cfg.kind == "hf":
        from steper_ray.reasoning.generators.hf_engine import HFGenerator

        return HFGenerator(
            cfg.model, cfg.max_tokens, cfg.batch_size, cfg.temperature, cfg.top_p,
            cfg.max_model_len, cfg.device, cfg.dtype, cfg.seed,
        )
    from steper_ray.reasoning.generators.openai_client import OpenAIGenerator

    assert cfg.base_url is not None
    return OpenAIGenerator(
        cfg.base_url, cfg.model, cfg.api_key_env, cfg.max_tokens, cfg.temperature, cfg.top_p,
        cfg.seed, cfg.timeout_s, cfg.max_retries, cfg.concurrency,
    )

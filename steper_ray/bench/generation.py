"""`steper-ray bench generation`: the same questions and tiny vLLM teacher, once as a plain
single-process loop over StepwiseReasoner and once as the Ray Data job (one actor).

Steady state: engine start is excluded on both sides by timing from the end of the first
batch to the end of the last one (questions and tokens of the batches after the first).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

from steper_ray.config import GeneratorConfig, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.data.records import QuestionRecord
from steper_ray.generate.job import run_generate
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.reasoning.prompts import PromptBuilder, TeacherPromptSpec
from steper_ray.retrieval import build_index, load_index
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


class SteadyClock:
    """Throughput after the first batch: engine start and warm-up excluded."""

    def __init__(self) -> None:
        self.t_first: float | None = None
        self.t_last = 0.0
        self.questions = self.tokens = 0
        self.all_tokens = 0  # including the first batch: both sides generate the same tokens

    def batch(self, questions: int, tokens: int) -> None:
        now = time.perf_counter()
        self.all_tokens += tokens
        if self.t_first is None:
            self.t_first = now
            return
        self.t_last = now
        self.questions += questions
        self.tokens += tokens

    def result(self) -> dict[str, float]:
        span = self.t_last - (self.t_first or self.t_last)
        return {
            "questions": self.questions,
            "tokens": self.tokens,
            "seconds": round(span, 3),
            "questions_per_s": round(self.questions / span, 3) if span > 0 else 0.0,
            "tokens_per_s": round(self.tokens / span, 1) if span > 0 else 0.0,
            "total_tokens": self.all_tokens,
        }


def _questions(cfg: SteperConfig, n: int) -> list[QuestionRecord]:
    records: list[QuestionRecord] = []
    for spec in cfg.data.train:
        records += read_dataset(spec.path, spec.format, name=spec.name).records
    return records[:n]


def run_generation_bench(cfg: SteperConfig, out: Path, model: str | None = None,
                         num_questions: int = 60, batch_size: int = 10, max_tokens: int = 32) -> dict[str, Any]:
    from steper_ray.commands.tiny_model import run_tiny_model
    from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator

    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = str(out / "model")
        if not (out / "model" / "config.json").is_file():
            run_tiny_model(cfg, model)
    records = _questions(cfg, num_questions)
    index_dir = out / "index"
    build_index(extract_corpus(records), cfg.index, progress=False).save(index_dir)
    teacher = GeneratorConfig(kind="vllm", model=model, max_tokens=max_tokens, max_model_len=4096)

    # 1. Plain loop in this process.
    t0 = time.perf_counter()
    gen = VLLMGenerator(model, dtype="float32", max_model_len=teacher.max_model_len, max_tokens=max_tokens)
    engine_start = time.perf_counter() - t0
    prompt = PromptBuilder.teacher(TeacherPromptSpec.load(cfg.reasoning.teacher_prompt))
    reasoner = StepwiseReasoner(load_index(index_dir), gen, prompt, cfg.reasoning.max_steps,
                                cfg.retrieval.k, cfg.reasoning.max_passages)
    plain = SteadyClock()
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        traces = reasoner.run([Question(r.id, r.question) for r in batch])
        plain.batch(len(batch), sum(t.num_tokens for t in traces))
    del reasoner, gen
    gc.collect()

    # 2. The Ray Data job, one teacher actor, same questions and batch size.
    spec = [{"name": "bench", "path": str(_write_questions(records, out / "questions.jsonl")), "format": "jsonl"}]
    job_cfg = cfg.model_copy(deep=True)
    job_cfg.run_dir = str(out / "ray_run")
    job_cfg.data.train = [job_cfg.data.train[0].model_validate(s) for s in spec]
    job_cfg.generate.index = str(index_dir)
    job_cfg.generate.teacher = teacher
    job_cfg.generate.batch_size = batch_size
    job_cfg.generate.replicas = 1
    ray_clock = SteadyClock()
    t0 = time.perf_counter()
    run_generate(job_cfg, on_batch=ray_clock.batch)
    ray_total = time.perf_counter() - t0

    p, r = plain.result(), ray_clock.result()
    summary = {
        "benchmark": "generation",
        "model": model,
        "questions": len(records),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "plain_loop": {**p, "engine_start_s": round(engine_start, 2)},
        "ray_data": {**r, "total_wall_s_with_startup": round(ray_total, 2)},
        "ratio_questions_per_s": round(r["questions_per_s"] / p["questions_per_s"], 3) if p["questions_per_s"] else None,
        "ratio_tokens_per_s": round(r["tokens_per_s"] / p["tokens_per_s"], 3) if p["tokens_per_s"] else None,
    }
    write_summary(out, summary)
    return summary


def _write_questions(records: list[QuestionRecord], path: Path) -> Path:
    """The benchmark's questions as generic JSONL (the evidence fields are not needed)."""
    import json

    path.write_text("".join(
        json.dumps({"id": r.id, "question": r.question, "answers": r.answers}) + "\n" for r in records))
    return path

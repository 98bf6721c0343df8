"""`steper-ray bench training`: tokens/s of the Ray Train + DeepSpeed loop against a plain
single-process torch loop on the same tiny model and step examples, and the padding waste of
our batch plan against naive per-task padding.

The examples are real: the evidence teacher's step examples for the bundled training
questions. Tokens/s counts non-padding tokens, averaged over the steps after the first two.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from steper_ray.config import BM25Config, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.generate.examples import trace_examples
from steper_ray.layout import RunLayout
from steper_ray.reasoning.generators.evidence import EvidenceGenerator
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.summary import write_summary
from steper_ray.train.data import collate, encode_all, padding_waste, plan_steps
from steper_ray.train.loop import StudentWithLoss
from steper_ray.train.loss import TASKS, StepERLoss

WARMUP_STEPS = 2


def evidence_examples(cfg: SteperConfig) -> list[dict[str, Any]]:
    records = []
    for spec in cfg.data.train:
        records += read_dataset(spec.path, spec.format, name=spec.name).records
    retriever = BM25Retriever.build(extract_corpus(records), BM25Config())
    reasoner = StepwiseReasoner(retriever, EvidenceGenerator(records), max_steps=cfg.reasoning.max_steps,
                                k=cfg.retrieval.k, max_passages=cfg.reasoning.max_passages)
    traces = reasoner.run([Question(r.id, r.question) for r in records])
    return [e for t in traces for e in trace_examples(t)]


def naive_batches(items: list[Any], micro_batch: int) -> list[list[int]]:
    """Per-task batches in data order, each padded to its longest member."""
    out = []
    for task in range(len(TASKS)):
        idx = [i for i, it in enumerate(items) if it.task == task]
        out += [idx[k:k + micro_batch] for k in range(0, len(idx), micro_batch)]
    return out


def plain_loop_tokens_per_s(model_dir: str, items: list[Any], steps: list[list[list[int]]], pad_id: int,
                            lr: float) -> float:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    module = StudentWithLoss(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), StepERLoss())
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    rates = []
    for n, step in enumerate(steps):
        t0 = time.perf_counter()
        tokens = 0
        for mb in step:
            batch = collate([items[i] for i in mb], pad_id)
            loss, _, _ = module(**batch)
            (loss / len(step)).backward()
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if n >= WARMUP_STEPS:
            rates.append(tokens / (time.perf_counter() - t0))
    return sum(rates) / len(rates) if rates else 0.0


def run_training_bench(cfg: SteperConfig, out: Path, steps: int = 12) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from steper_ray.commands.tiny_model import run_tiny_model
    from steper_ray.train.trainer import run_train

    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    if not (model_dir / "config.json").is_file():
        run_tiny_model(cfg, model_dir)
    examples = evidence_examples(cfg)
    ex_path = out / "examples.parquet"
    pq.write_table(pa.Table.from_pylist(examples), ex_path)
    tcfg = cfg.train
    tok = AutoTokenizer.from_pretrained(model_dir)
    items, dropped = encode_all(tok, examples, tcfg.max_len, tcfg.loss.target, tcfg.trim)
    lengths = [len(it) for it in items]

    plan = plan_steps(items, tcfg.micro_batch_size, tcfg.grad_accum, tcfg.seed, 0)
    ours = padding_waste([mb for s in plan for mb in s], lengths)
    naive = padding_waste(naive_batches(items, tcfg.micro_batch_size), lengths)

    plain = plain_loop_tokens_per_s(str(model_dir), items, plan[:steps], tok.pad_token_id, tcfg.lr)

    run_cfg = cfg.model_copy(deep=True)
    run_cfg.run_dir = str(out / "ray_run")
    run_cfg.train.student = str(model_dir)
    run_cfg.train.examples = str(ex_path)
    run_cfg.train.max_steps = steps
    run_cfg.train.checkpoint_every = steps
    run_train(run_cfg)
    rows = [json.loads(x) for x in RunLayout(run_cfg).trained.metrics.read_text().splitlines()]
    ray_rates = [r["tokens_per_s"] for r in rows[WARMUP_STEPS:]]
    ray_tps = sum(ray_rates) / len(ray_rates) if ray_rates else 0.0

    summary = {
        "benchmark": "training",
        "examples": len(examples),
        "examples_encoded": len(items),
        "dropped": dict(dropped),
        "micro_batch_size": tcfg.micro_batch_size,
        "grad_accum": tcfg.grad_accum,
        "padding_waste": {"ours": round(ours, 4), "naive_per_task": round(naive, 4)},
        "tokens_per_s": {
            "plain_torch_1_process": round(plain, 1),
            f"ray_train_deepspeed_zero{tcfg.zero_stage}_{tcfg.num_workers}_workers": round(ray_tps, 1),
        },
        "ratio_ray_over_plain": round(ray_tps / plain, 3) if plain else None,
        "steps_timed": max(0, steps - WARMUP_STEPS),
    }
    write_summary(out, summary)
    return summary

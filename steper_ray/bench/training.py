"""`steper-ray bench training`: tokens/s of the Ray Train + DeepSpeed loop against a plain
single-process torch loop on the same tiny model and step examples (two workers, as configured),
one Ray Train worker against the same worker body run without Ray beside the same idle Ray
cluster (the framework's own per-step overhead), what that idle cluster costs the worker body
(when the benchmark starts Ray itself), and the padding waste of our batch plan against naive
per-task padding.

The examples are real: the evidence teacher's step examples for the bundled training
questions. Tokens/s counts non-padding tokens, averaged over the steps after the first two.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from steper_ray.config import BM25Config, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.generate.examples import trace_examples
from steper_ray.layout import RunLayout, TrainDir
from steper_ray.reasoning.generators.evidence import EvidenceGenerator
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.summary import write_summary
from steper_ray.train.data import collate, encode_all, padding_waste, plan_steps
from steper_ray.train.loop import StudentWithLoss, make_loop_config
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


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _steady_tokens_per_s(metrics: Path) -> float:
    """Mean tokens/s of the logged steps after the warm-up ones."""
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    rates = [r["tokens_per_s"] for r in rows[WARMUP_STEPS:]]
    return sum(rates) / len(rates) if rates else 0.0


def _fresh(path: Path) -> Path:
    # The benchmark's own run directory: a previous run's checkpoints would be resumed and its
    # metrics appended to, so it starts empty.
    shutil.rmtree(path, ignore_errors=True)
    return path


def ray_train_run(cfg: SteperConfig, run_dir: Path) -> dict[str, float]:
    """`steper-ray train` with ``cfg`` into ``run_dir``: steady tokens/s and wall seconds."""
    from steper_ray.train.trainer import run_train

    cfg = cfg.model_copy(update={"run_dir": str(_fresh(run_dir))})
    t0 = time.perf_counter()
    run_train(cfg)
    return {"tokens_per_s": _steady_tokens_per_s(RunLayout(cfg).trained.metrics),
            "wall_s": round(time.perf_counter() - t0, 2)}


def worker_body_run(cfg: SteperConfig, train_dir: Path) -> dict[str, float]:
    """The training worker body without Ray (LocalContext), in a process of its own so that
    its process group and DeepSpeed state stay out of this one: tokens/s and wall seconds."""
    import subprocess
    import sys

    import steper_ray

    _fresh(train_dir)
    config = make_loop_config(cfg.train, cfg.train.student or "", cfg.train.examples or "", str(train_dir))
    code = ("import json, sys\nfrom steper_ray.train.loop import train_loop_per_worker\n"
            "train_loop_per_worker(json.loads(sys.argv[1]))\n")
    root = str(Path(steper_ray.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, json.dumps(config)], check=False, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the plain training worker failed:\n{done.stderr[-3000:]}")
    return {"tokens_per_s": _steady_tokens_per_s(TrainDir(train_dir).metrics),
            "wall_s": round(time.perf_counter() - t0, 2)}


ONE_WORKER_GOAL = 0.9  # Ray Train's own overhead: one worker keeps at least 90% of the plain worker body


def run_training_bench(cfg: SteperConfig, out: Path, steps: int = 12) -> dict[str, Any]:
    import ray
    from transformers import AutoTokenizer

    from steper_ray.commands.tiny_model import run_tiny_model
    from steper_ray.ray_session import ensure_ray

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

    threads = torch.get_num_threads()  # what the plain loop above used
    base = cfg.model_copy(deep=True)
    base.train.student, base.train.examples = str(model_dir), str(ex_path)
    base.train.max_steps = base.train.checkpoint_every = steps
    one = base.model_copy(deep=True)
    # The framework's own overhead: one worker against the same worker body without Ray, both
    # with the plain loop's threads (a Ray worker reserving half a CPU would get one thread).
    one.train.num_workers, one.train.threads_per_worker = 1, threads
    # The worker body without Ray twice: with no Ray on the machine (unless this process already
    # runs one), then beside the idle local cluster the Ray Train runs use. On a small machine
    # the idle cluster's daemons take a share of the cores; that is not a per-step cost of Ray
    # Train, so the one-worker ratio compares runs that share the machine with the same cluster.
    no_cluster = None if ray.is_initialized() else worker_body_run(one, out / "plain_worker_no_cluster")
    ensure_ray()
    body = worker_body_run(one, out / "plain_worker")
    ray_one = ray_train_run(one, out / "ray_1_worker")
    ray_n = ray_train_run(base, out / "ray_run")

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
            f"worker_body_without_ray_1_process_{threads}_threads": round(body["tokens_per_s"], 1),
            "worker_body_without_ray_no_cluster_running": round(no_cluster["tokens_per_s"], 1) if no_cluster else None,
            f"ray_train_deepspeed_zero{tcfg.zero_stage}_1_worker_{threads}_threads": round(ray_one["tokens_per_s"], 1),
            f"ray_train_deepspeed_zero{tcfg.zero_stage}_{tcfg.num_workers}_workers": round(ray_n["tokens_per_s"], 1),
        },
        "ratio_ray_over_plain": round(ray_n["tokens_per_s"] / plain, 3) if plain else None,
        # one Ray Train worker against the plain loop (the same worker body without Ray): Ray
        # Train's own overhead per optimizer step
        "ratio_one_worker_over_plain": _ratio(ray_one["tokens_per_s"], body["tokens_per_s"]),
        # the same against the worker body with no Ray running, and what the idle cluster alone
        # costs the worker body (null when Ray was already running before the benchmark)
        "ratio_one_worker_over_plain_no_cluster": _ratio(ray_one["tokens_per_s"], no_cluster["tokens_per_s"])
        if no_cluster else None,
        "idle_cluster_share": _ratio(body["tokens_per_s"], no_cluster["tokens_per_s"]) if no_cluster else None,
        "ratio_one_worker_over_plain_torch": _ratio(ray_one["tokens_per_s"], plain),
        "wall_s_with_startup": {"worker_body_without_ray": body["wall_s"],
                                "worker_body_no_cluster_running": no_cluster["wall_s"] if no_cluster else None,
                                "ray_train_1_worker": ray_one["wall_s"],
                                f"ray_train_{tcfg.num_workers}_workers": ray_n["wall_s"]},
        "steps_timed": max(0, steps - WARMUP_STEPS),
    }
    one_worker = summary["ratio_one_worker_over_plain"]
    summary["target"] = {  # which figure the target is about, since several ratios sit above
        "field": "ratio_one_worker_over_plain",
        "compares": "one Ray Train worker over the same worker body without Ray, beside the idle cluster",
        "goal": ONE_WORKER_GOAL,
        "met": one_worker is not None and one_worker >= ONE_WORKER_GOAL,
    }
    write_summary(out, summary)
    return summary

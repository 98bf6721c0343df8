"""`steper-ray pipeline`: every stage that exists, into one run directory, resumable by stage.

Stages: ``index`` (one index per dev dataset, over its pooled paragraphs), ``retrieval_eval``
(recall@k of gold paragraphs, retrieving with the question), ``generate`` (teacher traces on
Ray Data, filtered and cut into step examples), ``train`` (the student on Ray Train + DeepSpeed
ZeRO) and ``evaluate`` (the student answers the dev sets on Ray Data; metrics and a chart);
with ``serve`` the trained student is then served over HTTP until stopped. A stage that
finished has a ``summary.json`` in its directory and is skipped on rerun; an interrupted
``generate`` resumes where it stopped and an interrupted ``train`` from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steper_ray.config import SteperConfig, dump_config
from steper_ray.commands.index import build_dev_index
from steper_ray.data import read_dataset
from steper_ray.evaluate.metrics import mean_recall_at
from steper_ray.retrieval import load_index
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


def stage_index(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    datasets = {spec.name: build_dev_index(spec, cfg.index, out / spec.name) for spec in cfg.data.dev}
    return {"kind": cfg.index.kind, "datasets": datasets}


def stage_retrieval_eval(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    index_dir = Path(cfg.run_dir) / "index"
    cutoffs = sorted(cfg.retrieval.recall_at)
    metrics = {}
    for spec in cfg.data.dev:
        read = read_dataset(spec.path, spec.format, spec.limit, name=spec.name).records
        records = [r for r in read if r.answerable]  # MuSiQue-Full: support scored on answerable only
        retriever = load_index(index_dir / spec.name)
        hits = retriever.search([r.question for r in records], max(cutoffs))
        rows = []
        for rec, hs in zip(records, hits):
            ids = [h.id for h in hs]
            rows.append({"id": rec.id, "question": rec.question, "gold_ids": rec.gold_ids, "hits": ids})
        with (out / f"{spec.name}.jsonl").open("w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        recall = mean_recall_at([r["hits"] for r in rows], [r["gold_ids"] for r in rows], cutoffs)
        metrics[spec.name] = {
            "questions": len(rows),
            "unanswerable_not_scored": len(read) - len(records),
            **{f"recall@{k}": round(v or 0.0, 4) for k, v in recall.items()},
        }
    return {"metrics": metrics}


def stage_generate(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from steper_ray.generate.job import run_generate

    return run_generate(cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"out": str(out)})}))


def stage_train(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from steper_ray.train.trainer import run_train

    return run_train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"out": str(out)})}))


def stage_evaluate(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from steper_ray.evaluate.job import run_evaluate
    from steper_ray.evaluate.report import compare_runs

    ecfg = cfg.evaluate.model_copy(update={"out": str(out)})
    summary = run_evaluate(cfg.model_copy(update={"evaluate": ecfg}))
    report = compare_runs([str(out)], out / "report")  # this run's table and chart
    return {**summary, "report": report["report"], "plot": report["plot"]}


STAGES: list[tuple[str, Callable[[SteperConfig, Path], dict[str, Any]]]] = [
    ("index", stage_index),
    ("retrieval_eval", stage_retrieval_eval),
    ("generate", stage_generate),
    ("train", stage_train),
    ("evaluate", stage_evaluate),
]


def run_stage(cfg: SteperConfig, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pipeline stage into <run_dir>/<name>, skipped when its summary.json exists:
    (the stage's row for the stage table, its summary)."""
    fn = dict(STAGES)[name]
    out = Path(cfg.run_dir) / name
    done = out / "summary.json"
    if done.is_file():
        log.info("stage %s: already complete, skipped (delete %s to redo it)", name, out)
        result = json.loads(done.read_text())
        return {"stage": name, "status": "skipped", "seconds": result.get("seconds", 0.0)}, result
    log.info("stage %s: running", name)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = fn(cfg, out)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_summary(out, result)
    return {"stage": name, "status": "done", "seconds": result["seconds"]}, result


def run_pipeline(cfg: SteperConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    t_all = time.perf_counter()
    stages = []
    results: dict[str, Any] = {}
    for name, _ in STAGES:
        row, results[name] = run_stage(cfg, name)
        stages.append(row)
    summary = {
        "command": "pipeline",
        "run_dir": str(run_dir),
        "stages": stages,
        "index": results["index"],
        "retrieval": results["retrieval_eval"]["metrics"],
        "generate": {k: results["generate"].get(k) for k in
                     ("teacher", "questions", "kept", "dropped", "dropped_by_reason", "examples_per_task")},
        "train": {k: results["train"].get(k) for k in ("loss_mode", "steps", "final", "model", "plot")},
        "evaluate": {k: results["evaluate"].get(k) for k in ("model", "metrics", "report", "plot")},
        "wall_s": round(time.perf_counter() - t_all, 3),
    }
    write_summary(run_dir, summary)
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = ["stage            status    seconds"]
    lines += [f"{s['stage']:<16} {s['status']:<9} {s['seconds']:>7.1f}" for s in summary["stages"]]
    metrics = summary["retrieval"]
    if metrics:
        cols = [c for c in next(iter(metrics.values())) if c.startswith("recall@")]
        lines.append("")
        lines.append(f"{'dataset':<16} {'questions':>9} " + " ".join(f"{c:>10}" for c in cols))
        for name, m in metrics.items():
            lines.append(f"{name:<16} {m['questions']:>9} " + " ".join(f"{m[c]:>10.3f}" for c in cols))
    gen = summary["generate"]
    lines.append("")
    lines.append(f"teacher {gen['teacher']}: {gen['kept']}/{gen['questions']} traces kept; "
                 f"examples per task {gen['examples_per_task']}; dropped {gen['dropped_by_reason']}")
    tr = summary["train"]
    final = tr.get("final") or {}
    sig = ", ".join(f"{t} {final[f'sigma_{t}']:.3f}" for t in ("init", "exp", "agg") if final.get(f"sigma_{t}") is not None)
    lines.append(f"student ({tr['loss_mode']}, {tr['steps']} steps): final sigmas {sig}; model {tr['model']}")
    ev = summary["evaluate"]
    lines.append("")
    lines.append(f"{'dev set':<16} {'questions':>9} {'EM':>6} {'F1':>6} {'Acc':>6} {'recall':>7} {'steps':>6} {'tok/q':>6}")
    for name, m in (ev.get("metrics") or {}).items():
        cells = " ".join(f"{m[k]:>{w}.3f}" if m.get(k) is not None else f"{'-':>{w}}"
                         for k, w in (("em", 6), ("f1", 6), ("acc", 6), ("recall", 7)))
        lines.append(f"{name:<16} {m['questions']:>9} {cells} {m['mean_steps']:>6.2f} {m['tokens_per_question']:>6.1f}")
    lines.append(f"plots: {tr.get('plot')}, {ev.get('plot')}")
    return "\n".join(lines)

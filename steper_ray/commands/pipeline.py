"""`steper-ray pipeline`: every stage that exists, into one run directory, resumable by stage.

Stages: ``index`` (one index per dev dataset, over its pooled paragraphs), ``retrieval_eval``
(recall@k of gold paragraphs, retrieving with the question), ``generate`` (teacher traces on
Ray Data, filtered and cut into step examples), ``train`` (the student on Ray Train + DeepSpeed
ZeRO) and ``evaluate`` (the student answers the dev sets on Ray Data; metrics and a chart);
with ``serve`` the trained student is then served over HTTP until stopped. The run ends with
its report (``<run_dir>/report.html``, ``steper_ray.report``), from what the stages wrote. A
stage that finished has a ``summary.json`` in its directory and is skipped on rerun; an interrupted
``generate`` resumes where it stopped and an interrupted ``train`` from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steper_ray.commands.index import build_dev_index
from steper_ray.config import SteperConfig, dump_config
from steper_ray.console import Console, run_stage
from steper_ray.data import read_dataset
from steper_ray.errors import UserError
from steper_ray.evaluate.metrics import gold_key, mean_recall_at
from steper_ray.layout import RunLayout
from steper_ray.reasoning.prompts import TeacherPromptSpec
from steper_ray.progress import progress
from steper_ray.retrieval import load_index
from steper_ray.retrieval.store import check_index_dir
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


def stage_index(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    """One index per dev set (``RunLayout.dev_index``; with a corpus file one for all, built
    once); a user's ``evaluate.index_dir`` is checked, not built."""
    layout = RunLayout(cfg)
    datasets: dict[str, Any] = {}
    first_at: dict[Path, str] = {}  # index path -> the dev set it was built for
    progress().start(len(cfg.data.dev), "datasets")
    for spec in cfg.data.dev:
        path = layout.dev_index(spec.name)
        if not layout.dev_indexes_are_ours:
            datasets[spec.name] = {"given": str(path), "passages": check_index_dir(path)["num_passages"]}
        elif path in first_at:
            datasets[spec.name] = {**datasets[first_at[path]], "shared_with": first_at[path]}
        else:
            first_at[path] = spec.name
            datasets[spec.name] = build_dev_index(spec, cfg, path)
        progress().advance()
    return {"kind": cfg.index.kind, "corpus": cfg.data.corpus, "datasets": datasets}


def stage_retrieval_eval(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    layout = RunLayout(cfg)
    cutoffs = sorted(cfg.retrieval.recall_at)
    metrics = {}
    progress().start(len(cfg.data.dev), "datasets")
    for spec in cfg.data.dev:
        read = read_dataset(spec.path, spec.format, spec.limit, name=spec.name).records
        records = [r for r in read if r.answerable]  # MuSiQue-Full: support scored on answerable only
        retriever = load_index(layout.dev_index(spec.name))
        hits = retriever.search([r.question for r in records], max(cutoffs))
        rows, scored = [], []
        for rec, hs in zip(records, hits):
            rows.append({"id": rec.id, "question": rec.question, "gold_ids": rec.gold_ids, "hits": [h.id for h in hs]})
            scored.append([gold_key(h.id, h.title, h.text, rec.gold_ids) for h in hs])
        with (out / f"{spec.name}.jsonl").open("w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        recall = mean_recall_at(scored, [r["gold_ids"] for r in rows], cutoffs)
        metrics[spec.name] = {
            "questions": len(rows),
            "unanswerable_not_scored": len(read) - len(records),
            **{f"recall@{k}": round(v or 0.0, 4) for k, v in recall.items()},
        }
        progress().advance()
    return {"corpus": cfg.data.corpus, "metrics": metrics}


def stage_generate(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from steper_ray.generate.job import run_generate

    return run_generate(cfg)  # into RunLayout.generate, which is ``out``


def stage_train(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from steper_ray.train.trainer import run_train

    return run_train(cfg)  # into RunLayout.train, which is ``out``


def stage_evaluate_base(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    """The untrained student, zero-shot with the same student prompt (``evaluate.baseline``)."""
    from steper_ray.evaluate.job import run_evaluate
    from steper_ray.models.student import base_student

    model = base_student(cfg, cfg.evaluate.student_engine)
    ecfg = cfg.evaluate.model_copy(update={"out": str(out), "model": model, "prompt": "student"})
    return run_evaluate(cfg.model_copy(update={"evaluate": ecfg}), label="student before training (zero-shot)")


def stage_evaluate(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from steper_ray.evaluate.job import run_evaluate
    from steper_ray.evaluate.report import compare_runs

    ecfg = cfg.evaluate.model_copy(update={"out": str(out)})
    base = RunLayout(cfg).evaluate_base
    label = f"student after training ({cfg.train.loss.mode})" if cfg.evaluate.baseline else None
    summary = run_evaluate(cfg.model_copy(update={"evaluate": ecfg}), label=label)
    runs = [str(base), str(out)] if (base / "summary.json").is_file() else [str(out)]
    report = compare_runs(runs, out / "report")  # this run's table and chart (before and after)
    return {**summary, "report": report["report"], "plot": report["plot"]}


def pipeline_stages(cfg: SteperConfig) -> list[tuple[str, Callable[[SteperConfig, Path], dict[str, Any]]]]:
    """The pipeline's stages in order; ``evaluate.baseline`` adds the untrained student's evaluation."""
    return [
        ("index", stage_index),
        ("retrieval_eval", stage_retrieval_eval),
        ("generate", stage_generate),
        *([("evaluate_base", stage_evaluate_base)] if cfg.evaluate.baseline else []),
        ("train", stage_train),
        ("evaluate", stage_evaluate),
    ]


def run_pipeline_stage(cfg: SteperConfig, name: str,
                       console: Console | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pipeline stage into its directory (the run layout's), skipped when its summary.json
    exists: (the stage's row for the stage table, its summary). With a ``console`` the stage
    shows one progress line and logs into ``<run_dir>/logs/<stage>.log``; a failure shows the
    log's tail (StageFailed); without one, a stage that runs takes over the current progress line
    under its own name. Raises ``KeyError`` for a stage this config does not run."""
    layout = RunLayout(cfg)
    fn = dict(pipeline_stages(cfg))[name]
    out = layout.stage_dir(name)
    done = out / "summary.json"
    if done.is_file():
        log.info("stage %s: already complete, skipped (delete %s to redo it)", name, out)
        if console is not None:
            console.print(f"{name:<15} skipped (already complete; delete {out} to redo it)")
        result = json.loads(done.read_text())
        return {"stage": name, "status": "skipped", "seconds": result.get("seconds", 0.0)}, result
    log.info("stage %s: running", name)
    out.mkdir(parents=True, exist_ok=True)
    if console is None:  # run inside another command's stage (ablate): its progress line, under this name
        progress().relabel(name)
    t0 = time.perf_counter()
    result = run_stage(console, name, layout.log_file(name), fn, cfg, out)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_summary(out, result)
    return {"stage": name, "status": "done", "seconds": result["seconds"]}, result


def check_corpus_of_finished_stages(cfg: SteperConfig) -> None:
    """Raise UserError when a finished stage of this run used another ``data.corpus``: a rerun
    would skip it and mix its results with the new setting's (summaries from before the setting
    held 'questions')."""
    layout = RunLayout(cfg)
    other = {}
    for name in ("index", "retrieval_eval", "generate", "evaluate_base", "evaluate"):
        done = layout.stage_dir(name) / "summary.json"
        if done.is_file():
            used = json.loads(done.read_text()).get("corpus", "questions")
            if used != cfg.data.corpus:
                other[name] = (used, done.parent)
    if other:
        used = sorted({u for u, _ in other.values()})
        dirs = " ".join(str(d) for _, d in other.values())
        raise UserError(f"this run's finished stages used data.corpus={', '.join(used)}, not "
                        f"{cfg.data.corpus!r}; use another run_dir, or delete their directories to redo "
                        f"them with this setting: rm -r {dirs}")


def run_pipeline(cfg: SteperConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every stage not finished yet (see :func:`run_pipeline_stage`), write the summary,
    then the run report (:func:`write_run_report`; its path is the summary's ``report``).
    Raises UserError, before writing anything, when finished stages used another corpus."""
    layout = RunLayout(cfg)
    run_dir = layout.run_dir
    check_corpus_of_finished_stages(cfg)
    if cfg.reasoning.teacher_prompt:
        TeacherPromptSpec.load(cfg.reasoning.teacher_prompt)  # before the index stage, not in the generate actors
    run_dir.mkdir(parents=True, exist_ok=True)
    layout.config_file.write_text(dump_config(cfg))
    t_all = time.perf_counter()
    stages = []
    results: dict[str, Any] = {}
    for name, _ in pipeline_stages(cfg):
        row, results[name] = run_pipeline_stage(cfg, name, console)
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
        "evaluate": {k: results["evaluate"].get(k) for k in ("model", "label", "metrics", "report", "plot")},
        **({"evaluate_base": {k: results["evaluate_base"].get(k) for k in ("model", "label", "metrics")}}
           if "evaluate_base" in results else {}),
        "wall_s": round(time.perf_counter() - t_all, 3),
    }
    write_summary(run_dir, summary)  # = layout.summary
    summary["report"] = write_run_report(layout, console)
    write_summary(run_dir, summary)  # now with the report's path (None: not written)
    return summary


def write_run_report(layout: RunLayout, console: Console | None = None) -> str | None:
    """The run report (``layout.report``) from what the run wrote; its path, or None when it
    could not be written. Never raises: a failed report costs the run none of its results, it
    is logged and (with a ``console``) announced in one line with the command that rebuilds it."""
    from steper_ray.report import write_report

    try:
        return str(write_report(layout.run_dir))
    except Exception as exc:  # the stages' results are already safe on disk
        log.warning("the run report was not written", exc_info=True)
        if console is not None:
            detail = (str(exc).splitlines() or [""])[0]
            console.print(f"warning: the run report was not written ({type(exc).__name__}: {detail}); "
                          f"rebuild it with `steper-ray report {layout.run_dir}`", err=True)
        return None


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
    runs = [("before", summary["evaluate_base"]), ("after", ev)] if "evaluate_base" in summary else [("", ev)]
    lines.append("")
    lines.append(f"{'dev set':<16} {'student':<7} {'questions':>9} {'EM':>6} {'F1':>6} {'Acc':>6} {'marked':>7} "
                 f"{'recall':>7} {'steps':>6} {'tok/q':>6}")
    for name in ev.get("metrics") or {}:
        for when, run in runs:
            m = (run.get("metrics") or {}).get(name)
            if m is None:
                continue
            cells = " ".join(f"{m[k]:>{w}.3f}" if m.get(k) is not None else f"{'-':>{w}}"
                             for k, w in (("em", 6), ("f1", 6), ("acc", 6), ("marked", 7), ("recall", 7)))
            lines.append(f"{name:<16} {when:<7} {m['questions']:>9} {cells} {m['mean_steps']:>6.2f} "
                         f"{m['tokens_per_question']:>6.1f}")
    lines.append(f"plots: {tr.get('plot')}, {ev.get('plot')}")
    lines.append(f"report: {summary.get('report') or 'not written (see the warning above)'}")
    return "\n".join(lines)

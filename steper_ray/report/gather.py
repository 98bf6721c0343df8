"""What the run report shows, read from a run directory's files into plain dicts.

Each function reads one part of a run (through ``RunLayout``) and returns JSON-ready data, or
None when that stage has not run; nothing here writes. ``gather_report`` puts them together.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steper_ray import __version__
from steper_ray.config import DatasetSpec
from steper_ray.errors import UserError
from steper_ray.evaluate.metrics import answer_scores
from steper_ray.evaluate.report import evaluate_summary_problem
from steper_ray.generate.filter import reason_kind
from steper_ray.layout import RunLayout, predictions_file
from steper_ray.summary import summary_command

log = logging.getLogger(__name__)

# The pipeline's stages in run order (``commands.pipeline.pipeline_stages``).
STAGES = ("index", "retrieval_eval", "generate", "evaluate_base", "train", "evaluate")
# At most this many questions per source go into the trace browser (all are counted).
MAX_BROWSER_QUESTIONS = 5000
# Passage texts in the browser are cut after this many characters.
MAX_PASSAGE_CHARS = 1200
NOT_RUN = "not run"


def read_json(path: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable; an unreadable one (not
    JSON, not an object, no permission) is named in ``notes`` so the page says why a stage
    shows as not run instead of the whole report failing."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"{path} cannot be read ({exc}); its stage is shown as not run"
    else:
        if isinstance(data, dict):
            return data
        problem = f"{path} holds no JSON object; its stage is shown as not run"
    log.warning("%s", problem)
    if notes is not None:
        notes.append(problem)
    return None


# What reading a well-formed JSON file of the wrong shape raises (e.g. "stages": 5 where a list is
# expected: a hand-edited summary, or one of another tool)
SHAPE_ERRORS = (TypeError, AttributeError, KeyError, ValueError, IndexError)


def guarded_part(notes: list[str], what: str, default: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or ``default`` when the files it reads hold data of an unexpected shape
    (``SHAPE_ERRORS``): that part of the page shows as not run and ``notes`` says why, instead
    of the whole report failing. A UserError (not a run directory) still propagates."""
    try:
        return fn(*args)
    except UserError:
        raise
    except SHAPE_ERRORS as exc:
        problem = (f"{what}: data of an unexpected shape ({type(exc).__name__}: {exc}); "
                   "that part is shown as not run")
        log.warning("%s", problem)
        notes.append(problem)
        return default


def _finite(value: Any) -> float | None:
    """A number the page can draw or print; None for NaN, infinities (a diverged run logs them)
    and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def config_note(run_dir: Path) -> str | None:
    """Why the header shows default settings: the run has no config.yaml or it does not load."""
    from steper_ray.config import load_config

    cfg_file = Path(run_dir) / "config.yaml"
    if not cfg_file.is_file():
        return "this run has no config.yaml: settings in the header are the defaults"
    try:
        load_config(cfg_file)
    except UserError as exc:
        return f"{cfg_file} does not load ({str(exc).splitlines()[0]}): settings in the header are the defaults"
    return None


def check_run_dir(layout: RunLayout) -> None:
    """Raise UserError unless ``layout.run_dir`` holds a run: a pipeline summary or a stage directory."""
    run_dir = layout.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory; pass the run_dir of a pipeline "
                        "run, e.g. `steper-ray report runs/local`")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; pass the run_dir of a pipeline run "
                        "(default runs/local), e.g. `steper-ray report runs/local`")
    other = summary_command(layout.run_dir)
    if other not in (None, "pipeline"):  # e.g. <run_dir>/ablate or <run_dir>/generate given as the run
        raise UserError(f"{run_dir} holds the output of `steper-ray {other}`, not a run directory; pass the "
                        "run directory above it (the one `steper-ray pipeline` wrote its summary.json into)")
    if layout.summary.is_file() or layout.ablate.is_dir() or any(layout.stage_dir(s).is_dir() for s in STAGES):
        return
    raise UserError(f"{run_dir} is not a run directory (no summary.json and none of the stage "
                    f"directories {', '.join(s + '/' for s in STAGES)}); pass the run_dir of a "
                    "pipeline run, e.g. `steper-ray report runs/local`, or run `steper-ray pipeline "
                    f"run_dir={run_dir}` first")


def stage_rows(layout: RunLayout, pipeline: dict[str, Any] | None, notes: list[str]) -> list[dict[str, Any]]:
    """One row per pipeline stage: status (the pipeline's ``done`` / ``skipped``, else ``done``
    when the stage's summary.json exists, ``incomplete`` when only its directory does, else
    ``not run``) and seconds (the stage's own time, also for a stage skipped on a rerun; a
    stage run as its own command has only its ``wall_s``)."""
    recorded = {s["stage"]: s for s in (pipeline or {}).get("stages", []) if isinstance(s, dict)}
    rows = []
    for stage in STAGES:
        out = layout.stage_dir(stage)
        summary = read_json(out / "summary.json", notes)
        if stage == "index" and summary is None and out.is_dir() and stage not in recorded:
            continue  # indexes built by generate or ablate alone: no index stage ran
        if stage == "evaluate_base" and summary is None and stage not in recorded and not out.is_dir():
            continue  # only with evaluate.baseline
        if summary is not None:
            status = recorded.get(stage, {}).get("status", "done")
            seconds = _finite(summary.get("seconds", recorded.get(stage, {}).get("seconds", summary.get("wall_s"))))
        else:
            status = "incomplete" if out.is_dir() else NOT_RUN
            seconds = None
        rows.append({"stage": stage, "status": status, "seconds": seconds, "dir": str(out)})
    return rows


def retrieval_section(layout: RunLayout, notes: list[str]) -> dict[str, Any] | None:
    """Recall@k per dev set (retrieval_eval/summary.json), or None when it did not run."""
    summary = read_json(layout.retrieval_eval / "summary.json", notes)
    if summary is None:
        return None
    metrics = {ds: m for ds, m in (summary.get("metrics") or {}).items() if isinstance(m, dict)}
    cutoffs = sorted({int(k.split("@", 1)[1]) for m in metrics.values() for k in m
                      if k.startswith("recall@") and k.split("@", 1)[1].isdigit()})
    corpus = layout.cfg.data.corpus  # what the indexes held (data.corpus)
    return {"cutoffs": cutoffs, "corpus": corpus,
            "datasets": {ds: {k: _finite(v) for k, v in m.items()} for ds, m in metrics.items()}}


def trace_parts(layout: RunLayout) -> list[Path]:
    """The committed traces parts of generation (``part-*.parquet``), in write order."""
    folder = layout.generated.traces
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


# Trace columns the page shows; the steps' prompts (most of a trace's bytes) are never read.
_TRACE_COLUMNS = ("question_id", "dataset", "question", "answers", "answer", "kept", "drop_reason", "num_tokens", "steps")
_STEP_FIELDS = ("step", "task", "query", "retrieved_ids", "output", "num_tokens", "notes")


def _without_prompts(steps: pa.ChunkedArray) -> pa.ChunkedArray:
    """The steps column (list<struct>) with only the fields the page shows."""
    chunks = []
    for chunk in steps.chunks:
        values = chunk.values
        keep = [n for n in _STEP_FIELDS if values.type.get_field_index(n) >= 0]
        slim = pa.StructArray.from_arrays([values.field(n) for n in keep], names=keep)
        chunks.append(pa.ListArray.from_arrays(chunk.offsets, slim, mask=chunk.is_null()))
    return pa.chunked_array(chunks)


def read_traces(layout: RunLayout, notes: list[str]) -> list[dict[str, Any]]:
    """Every trace row (TRACE_SCHEMA, generate/store.py) of the run, without its prompts;
    unreadable parts are skipped and named in ``notes`` (generation moves them aside on its
    next run)."""
    rows: list[dict[str, Any]] = []
    for part in trace_parts(layout):
        try:
            names = set(pq.read_schema(part).names)
            table = pq.read_table(part, columns=[c for c in _TRACE_COLUMNS if c in names])
            if "steps" in names:
                table = table.set_column(table.schema.get_field_index("steps"), "steps",
                                         _without_prompts(table.column("steps")))
            rows += table.to_pylist()
        except (OSError, ValueError, pa.ArrowException) as exc:
            log.warning("traces part %s cannot be read (%s); left out of the report", part, exc)
            notes.append(f"traces part {part} cannot be read ({exc}); its questions are not counted or shown")
    return rows


def generate_section(layout: RunLayout, traces: list[dict[str, Any]], notes: list[str]) -> dict[str, Any] | None:
    """Kept and dropped traces, by reason kind, by full reason and by dataset (counted from the
    traces themselves); examples per task and tokens from generate's summary. None when
    generation wrote nothing."""
    summary = read_json(layout.generated.root / "summary.json", notes)
    if summary is None and not traces:
        return None
    dropped = [t.get("drop_reason") or "" for t in traces if not t.get("kept")]
    per_dataset: dict[str, Counter[str]] = {}
    for t in traces:
        per_dataset.setdefault(t.get("dataset") or "", Counter())["kept" if t.get("kept") else "dropped"] += 1
    return {
        "finished": summary is not None,
        "teacher": (summary or {}).get("teacher"),
        "teacher_model": (summary or {}).get("teacher_model"),
        "questions": len(traces),
        "kept": len(traces) - len(dropped),
        "dropped": len(dropped),
        "by_kind": dict(Counter(reason_kind(r) for r in dropped).most_common()),
        "by_reason": dict(Counter(dropped).most_common()),
        "per_dataset": {ds: {"kept": c["kept"], "dropped": c["dropped"]} for ds, c in per_dataset.items()},
        "examples_per_task": (summary or {}).get("examples_per_task") or {},
        "tokens": sum(int(t.get("num_tokens") or 0) for t in traces),
        "steps_without_new_passages": (summary or {}).get("steps_without_new_passages"),
    }


def read_metric_rows(path: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """``train/metrics.jsonl``: one row per optimizer step, the last logged for each step (a
    resumed run logs steps after its checkpoint again); lines that are not a step's metrics
    are skipped and counted in ``notes``."""
    if not path.is_file():
        return []
    rows: dict[int, dict[str, Any]] = {}
    bad = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            rows[row["step"]] = row
        elif line.strip():
            bad.append(number)
    if bad and notes is not None:
        notes.append(f"{path}: {len(bad)} line(s) are not a step's metrics (line {', '.join(map(str, bad[:5]))}"
                     f"{' ...' if len(bad) > 5 else ''}); the curves leave them out")
    return [rows[s] for s in sorted(rows)]


def train_section(layout: RunLayout, notes: list[str]) -> dict[str, Any] | None:
    """Sigma and per-task loss curves (one point per logged step), the loss mode and the final
    values; None when training logged nothing."""
    summary = read_json(layout.train / "summary.json", notes)
    rows = read_metric_rows(layout.trained.metrics, notes)
    if summary is None and not rows:
        return None
    tasks = list(dict.fromkeys(k[len("loss_"):] for r in rows for k in r if k.startswith("loss_")))

    def curve(key: str) -> list[list[float]]:
        # NaN and infinities (a diverged step) are left out of the curve, not drawn.
        return [[r["step"], v] for r in rows if (v := _finite(r.get(key))) is not None]

    return {
        "finished": summary is not None,
        "loss_mode": (summary or {}).get("loss_mode"),
        "steps": (summary or {}).get("steps", rows[-1]["step"] if rows else 0),
        "examples_used": (summary or {}).get("examples_used"),
        "final": {k: _finite(v) for k, v in ((summary or {}).get("final") or {}).items()}
                 if isinstance((summary or {}).get("final"), dict) else {},
        "tasks": tasks,
        "sigma": {t: curve(f"sigma_{t}") for t in tasks if any(f"sigma_{t}" in r for r in rows)},
        "loss": {t: curve(f"loss_{t}") for t in tasks},
    }


def evaluation_runs(layout: RunLayout, train: dict[str, Any] | None, notes: list[str]) -> list[dict[str, Any]]:
    """Each evaluated model of the run with its label (the mode), directory and metrics per dev
    set: the untrained student (evaluate_base), the trained one (evaluate) and each loss mode
    of ``steper-ray ablate``. Stages without a summary are left out."""
    mode = (train or {}).get("loss_mode") or layout.cfg.train.loss.mode
    candidates = [("evaluate_base", layout.evaluate_base, "student before training"),
                  ("evaluate", layout.evaluate, f"student after training ({mode})")]
    if layout.ablate.is_dir():
        candidates += [(f"ablate:{d.name}", d / "evaluate", f"ablation: {d.name}")
                       for d in sorted(layout.ablate.iterdir()) if d.is_dir()]
    runs = []
    for key, folder, default_label in candidates:
        summary = read_json(folder / "summary.json", notes)
        if summary is None:
            continue
        problem = ("is not `steper-ray evaluate`'s (its command is not evaluate)" if summary.get("command") != "evaluate"
                   else evaluate_summary_problem(summary))
        if problem:  # this evaluation only: the others still show
            notes.append(f"{folder / 'summary.json'} {problem}; that evaluation is shown as not run")
            continue
        metrics = {ds: {k: _finite(v) for k, v in m.items()} for ds, m in summary["metrics"].items()}
        runs.append({"key": key, "label": str(summary.get("label") or default_label), "dir": str(folder),
                     "metrics": metrics})
    return runs


def read_predictions(evaluate_dir: Path, datasets: Iterable[str]) -> list[dict[str, Any]]:
    """The prediction rows (PREDICTION_SCHEMA, evaluate/scoring.py) of an evaluation, dev set
    by dev set; a line that does not parse is skipped with a warning."""
    rows: list[dict[str, Any]] = []
    for name in datasets:
        path = predictions_file(evaluate_dir, name)
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                log.warning("%s line %d is not JSON (%s); left out of the report", path, number, exc)
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                log.warning("%s line %d is not a JSON object; left out of the report", path, number)
    return rows


def gold_ids(specs: Iterable[DatasetSpec], limit: int | None) -> tuple[dict[str, list[str]], list[str]]:
    """Gold paragraph ids by question id, read from the datasets the run used, and the names of
    datasets that could not be read (moved or deleted: their gold passages are not marked)."""
    from steper_ray.data import read_dataset

    gold: dict[str, list[str]] = {}
    unread = []
    for spec in specs:
        try:
            result = read_dataset(spec.path, spec.format, limit or spec.limit, name=spec.name)
        except UserError as exc:
            log.warning("dataset %s cannot be read for the report's gold passages: %s", spec.name, exc)
            unread.append(spec.name)
            continue
        for rec in result.records:
            gold.setdefault(rec.id, list(rec.gold_ids))
    return gold, unread


def read_passages(index_dir: Path, ids: set[str]) -> dict[str, list[str]]:
    """``{id: [title, text]}`` of the wanted passages in an index directory's passages.parquet
    (texts cut to MAX_PASSAGE_CHARS); empty when the index is missing or unreadable."""
    path = index_dir / "passages.parquet"
    if not ids or not path.is_file():
        return {}
    try:
        table = pq.read_table(path, columns=["id", "title", "text"], filters=[("id", "in", sorted(ids))])
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.warning("passages of %s cannot be read (%s); the report shows their ids only", index_dir, exc)
        return {}
    out = {}
    for pid, title, text in zip(*(table.column(c).to_pylist() for c in ("id", "title", "text"))):
        text = text or ""
        out[pid] = [title or "", text if len(text) <= MAX_PASSAGE_CHARS else text[:MAX_PASSAGE_CHARS] + " …"]
    return out


def _correct(answer: str | None, golds: list[str]) -> bool | None:
    """Acc (a gold contained in the answer as whole words; evaluate/metrics.py); None without golds."""
    if not golds:
        return None
    return bool(answer) and answer_scores(answer or "", golds)["acc"] == 1.0


def trace_question(t: dict[str, Any], source: int, gold: list[str] | None) -> dict[str, Any]:
    """One teacher trace as a trace browser row."""
    return {
        "src": source, "id": t.get("question_id"), "ds": t.get("dataset"), "q": t.get("question") or "",
        "gold": list(t.get("answers") or []), "answer": t.get("answer"),
        "kept": bool(t.get("kept")), "reason": t.get("drop_reason"),
        "correct": _correct(t.get("answer"), list(t.get("answers") or [])),
        "tokens": t.get("num_tokens"), "gold_ids": gold,
        "steps": [{"n": s.get("step"), "task": s.get("task"), "query": s.get("query"),
                   "ids": list(s.get("retrieved_ids") or []), "out": s.get("output"),
                   "tokens": s.get("num_tokens"), "notes": list(s.get("notes") or [])}
                  for s in t.get("steps") or [] if isinstance(s, dict)],
    }


def prediction_question(p: dict[str, Any], source: int, gold: list[str] | None) -> dict[str, Any]:
    """One dev-set prediction as a trace browser row (correct: its Acc; None when unscored)."""
    acc = p.get("acc")
    return {
        "src": source, "id": p.get("question_id"), "ds": p.get("dataset"), "q": p.get("question") or "",
        "gold": list(p.get("answers") or []), "answer": p.get("prediction"), "kept": None,
        "reason": p.get("error") or p.get("failure"),
        "correct": None if _finite(acc) is None else acc == 1.0, "em": _finite(p.get("em")), "f1": _finite(p.get("f1")),
        "tokens": p.get("num_tokens"), "gold_ids": gold,
        "steps": [{"n": s.get("step"), "task": s.get("task"), "query": s.get("query"),
                   "ids": list(s.get("passage_ids") or []), "out": s.get("reasoning"),
                   "tokens": s.get("num_tokens"), "notes": list(s.get("notes") or [])}
                  for s in p.get("steps") or [] if isinstance(s, dict)],
    }


def browser_section(layout: RunLayout, traces: list[dict[str, Any]], evaluations: list[dict[str, Any]],
                    max_questions: int = MAX_BROWSER_QUESTIONS) -> dict[str, Any]:
    """The trace browser's data: its sources (the teacher's traces, each evaluated student's
    dev predictions), their questions (at most ``max_questions`` per source) with their steps,
    and the retrieved passages once each (``{id: [title, text]}``)."""
    cfg = layout.cfg
    sources: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    passages: dict[str, list[str]] = {}
    notes: list[str] = []

    def add_source(key: str, label: str, rows: list[dict[str, Any]]) -> int:
        sources.append({"key": key, "label": label, "total": len(rows), "shown": min(len(rows), max_questions)})
        if len(rows) > max_questions:
            notes.append(f"{label}: the first {max_questions} of {len(rows)} questions are shown")
        return len(sources) - 1

    if traces:
        gold, unread = gold_ids(cfg.data.train, cfg.generate.limit)
        notes += [f"training set {n}: its file cannot be read, gold passages are not marked" for n in unread]
        src = add_source("generate", "teacher traces (generate)", traces)
        shown = [trace_question(t, src, gold.get(t.get("question_id") or "")) for t in traces[:max_questions]]
        wanted = {pid for q in shown for s in q["steps"] for pid in s["ids"]}
        passages.update(read_passages(layout.train_index, wanted))
        questions += shown
    dev_gold: dict[str, list[str]] | None = None
    for run in evaluations:
        if run["key"].startswith("ablate:"):
            continue  # the ablation modes are in the metrics table; their traces stay in ablate/
        rows = read_predictions(Path(run["dir"]), run["metrics"])
        if not rows:
            continue
        if dev_gold is None:
            dev_gold, unread = gold_ids(cfg.data.dev, cfg.evaluate.limit)
            notes += [f"dev set {n}: its file cannot be read, gold passages are not marked" for n in unread]
        src = add_source(run["key"], run["label"], rows)
        shown = [prediction_question(p, src, dev_gold.get(p.get("question_id") or "")) for p in rows[:max_questions]]
        for name in dict.fromkeys(q["ds"] for q in shown if isinstance(q["ds"], str) and q["ds"]):
            wanted = {pid for q in shown if q["ds"] == name for s in q["steps"] for pid in s["ids"]} - set(passages)
            passages.update(read_passages(layout.dev_index(name), wanted))
        questions += shown
    return {"sources": sources, "questions": questions, "passages": passages, "notes": notes}


def run_facts(layout: RunLayout, pipeline: dict[str, Any] | None) -> dict[str, Any]:
    """The report's header: where the run is, what it ran with, when the report was made."""
    cfg = layout.cfg
    teacher = cfg.generate.teacher
    return {
        "config_note": config_note(layout.run_dir),
        "run_dir": str(layout.run_dir),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "version": __version__,
        "pipeline_summary": pipeline is not None,
        "wall_s": (pipeline or {}).get("wall_s"),
        "teacher": teacher.kind + (f" ({teacher.model})" if teacher.model else ""),
        "student": cfg.train.student or f"tiny Llama ({layout.tiny_student})",
        "loss_mode": cfg.train.loss.mode,
        "k": cfg.retrieval.k,
        "train_sets": [s.name for s in cfg.data.train],
        "dev_sets": [s.name for s in cfg.data.dev],
    }


def gather_report(run_dir: str | Path, max_questions: int = MAX_BROWSER_QUESTIONS) -> dict[str, Any]:
    """Everything the report shows, as plain data: the run, its stage table, retrieval recall,
    kept and dropped traces, training curves, dev metrics per dataset and mode, and the trace
    browser. A stage that has not run is None (or missing from the lists).

    Raises UserError when ``run_dir`` is not a run directory; files that do not read are
    listed under ``problems`` and their parts shown as not run.
    """
    layout = RunLayout.of_run(run_dir)
    check_run_dir(layout)
    return gather_run(layout, max_questions)


def gather_run(layout: RunLayout, max_questions: int = MAX_BROWSER_QUESTIONS) -> dict[str, Any]:
    """``gather_report`` for a layout already checked with ``check_run_dir``."""
    notes: list[str] = []  # files that could not be read, shown at the top of the page
    pipeline = read_json(layout.summary, notes)
    traces = guarded_part(notes, str(layout.traces), [], read_traces, layout, notes)
    train = guarded_part(notes, str(layout.train), None, train_section, layout, notes)
    evaluations = guarded_part(notes, "the evaluate summaries", [], evaluation_runs, layout, train, notes)
    report = {
        "run": run_facts(layout, pipeline),
        "stages": guarded_part(notes, str(layout.summary), [], stage_rows, layout, pipeline, notes),
        "retrieval": guarded_part(notes, str(layout.retrieval_eval), None, retrieval_section, layout, notes),
        "generate": guarded_part(notes, str(layout.generate), None, generate_section, layout, traces, notes),
        "train": train,
        "evaluation": evaluations,
        "browser": guarded_part(notes, "the traces and predictions", {"sources": [], "questions": [], "passages": {}, "notes": []},
                                browser_section, layout, traces, evaluations, max_questions),
    }
    report["problems"] = list(dict.fromkeys(notes))
    return report

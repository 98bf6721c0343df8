"""`steper-ray generate`: teacher traces on Ray Data, filtered, cut into step examples.

Reads the training questions, skips those already written (resume), and runs the rest through
the reasoner job (``reasoning.job``) with TeacherStage actors (one engine + one retriever
each). The driver is the only writer: each finished batch becomes one committed part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from steper_ray.commands.index import train_index
from steper_ray.config import SteperConfig
from steper_ray.data import read_dataset
from steper_ray.data.paths import resolve_data_path
from steper_ray.data.records import QuestionRecord
from steper_ray.generate.stage import TeacherStage
from steper_ray.generate.store import PartStore
from steper_ray.layout import RunLayout
from steper_ray.models.prepare import resolved
from steper_ray.reasoning.job import ActorPool, run_reasoner_job
from steper_ray.reasoning.demos import demo_ids, demos_to_dicts, plan_demos
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


# The drop reason of a MuSiQue-Full unanswerable twin (reason kind 'unanswerable').
UNANSWERABLE = "unanswerable: MuSiQue-Full twin with its supporting paragraphs removed, not a training question"


def read_training_questions(cfg: SteperConfig) -> tuple[list[QuestionRecord], list[dict[str, Any]]]:
    """Good records of every training dataset, and one dropped row per bad record and per
    unanswerable record (MuSiQue-Full), so every input question is in the traces once."""
    records: list[QuestionRecord] = []
    bad_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in cfg.data.train:
        result = read_dataset(spec.path, spec.format, cfg.generate.limit or spec.limit, name=spec.name)
        for rec in result.records:
            if rec.id in seen:  # its own row id, so every output row stays unique
                bad_rows.append(error_row(f"{spec.name}:{rec.id}", spec.name, rec.question, rec.answers,
                                          "bad record: duplicate id across datasets"))
                continue
            seen.add(rec.id)
            if not rec.answerable:  # a MuSiQue-Full twin without its evidence: never a trace
                bad_rows.append({**error_row(rec.id, spec.name, rec.question, rec.answers, UNANSWERABLE),
                                 "error": None})
                continue
            records.append(rec)
        for b in result.bad:
            qid = b.record_id or f"{b.source}:{b.line}"
            if qid in seen:
                qid = f"{b.source}:{b.line}"
            seen.add(qid)
            bad_rows.append(error_row(qid, spec.name, "", [], f"bad record: {b.reason}"))
    return records, bad_rows


def error_row(qid: str, dataset: str, question: str, answers: list[str], reason: str) -> dict[str, Any]:
    return {"question_id": qid, "dataset": dataset, "question": question, "answers": answers,
            "answer": None, "final_output": "", "kept": False, "drop_reason": reason,
            "error": reason, "num_steps": 0, "num_tokens": 0, "passage_ids": [], "steps": []}


def run_generate(cfg: SteperConfig, on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run (or resume) generation; ``on_batch(questions, tokens)`` is called per written batch."""
    t0 = time.perf_counter()
    gcfg = cfg.generate.model_copy(update={"teacher": resolved(cfg.generate.teacher, "generate.teacher.model")})
    layout = RunLayout(cfg)
    out = layout.generate
    records, bad_rows = read_training_questions(cfg)
    demos, demo_info, held_out = {}, {}, set()
    if gcfg.teacher.kind != "evidence":  # the evidence teacher reads no prompt
        demos, demo_info = plan_demos(cfg, [spec.name for spec in cfg.data.train])
        held_out = {qid for picked in demos.values() for qid in demo_ids(picked)}
        records = [r for r in records if r.id not in held_out]  # a demonstration is never generated
    if cfg.data.corpus_file:  # a missing corpus file is refused before anything is written
        resolve_data_path(cfg.data.corpus_file, "data.corpus file")
    store = PartStore(out)
    store.recover()
    repaired = store.quarantine_damaged()  # their questions are not done: generated again
    done = store.done_ids()
    pending = [r for r in records if r.id not in done]
    new_bad = [row for row in bad_rows if row["question_id"] not in done]
    if new_bad:
        store.write(new_bad, [])
    total = len(records) + len(bad_rows)
    log.info("generate: %d questions, %d already done, %d to run, %d bad records",
             total, len(done), len(pending), len(bad_rows))

    processed = tokens = 0
    t_start = time.perf_counter()
    if pending:
        index = train_index(cfg)
        t_start = time.perf_counter()  # the rates below are generation's own
        stage_kwargs = {
            "generate": gcfg.model_dump(), "reasoning": cfg.reasoning.model_dump(),
            "index": str(index.resolve()), "k": cfg.retrieval.k,
            "demos": {name: demos_to_dicts(d) for name, d in demos.items()},
        }
        pool = ActorPool(gcfg.replicas, gcfg.batch_size, gcfg.num_cpus, gcfg.num_gpus, "generate")
        written: set[str] = done | {row["question_id"] for row in new_bad}
        for rows in run_reasoner_job(pending, TeacherStage, stage_kwargs, gcfg.teacher, pool,
                                     total=total, done=len(written)):
            traces, examples = [], []
            for row in rows:
                if row["question_id"] in written:  # a retried task must not write a question twice
                    continue
                written.add(row["question_id"])
                examples += row.pop("examples")
                traces.append(row)
                tokens += row["num_tokens"]
            if traces:
                store.write(traces, examples)
                processed += len(traces)
                if on_batch is not None:
                    on_batch(len(traces), sum(t["num_tokens"] for t in traces))
    run_s = time.perf_counter() - t_start if pending else 0.0
    wall = time.perf_counter() - t0
    summary = {
        "command": "generate",
        "out": str(out),
        "teacher": gcfg.teacher.kind,
        "teacher_model": gcfg.teacher.model,
        "corpus": cfg.data.corpus,  # what the training index holds (data.corpus)
        "index": str(layout.train_index),
        "questions_in": total,
        "demos": demo_info,
        "held_out_for_demos": len(held_out),
        **store.totals(),
        "repaired_parts": repaired,
        "this_run": {
            "questions": processed,
            "skipped_already_done": len(done),
            "tokens_generated": tokens,
            "questions_per_s": round(processed / run_s, 3) if run_s else None,
            "tokens_per_s": round(tokens / run_s, 1) if run_s else None,
            "generate_s": round(run_s, 3),
        },
        "wall_s": round(wall, 3),
    }
    write_summary(out, summary)
    return summary

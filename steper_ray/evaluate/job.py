"""`steper-ray evaluate`: a model answers the dev sets with the step-wise loop, on Ray Data.

Reads every dev set, makes sure each has its index, runs the questions through the reasoner job
(``reasoning.job``) with EvalStage actors (one engine + the retrievers each) and writes, per
dataset, the predictions (answer, steps with queries and passage ids, tokens) and the metrics.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from steper_ray.commands.index import dev_indexes
from steper_ray.config import SteperConfig
from steper_ray.data import read_dataset
from steper_ray.data.records import QuestionRecord
from steper_ray.errors import UserError
from steper_ray.evaluate.scoring import dataset_metrics
from steper_ray.evaluate.stage import EvalStage
from steper_ray.layout import RunLayout, predictions_file
from steper_ray.models.prepare import resolved
from steper_ray.models.student import trained_student
from steper_ray.reasoning.job import ActorPool, run_reasoner_job
from steper_ray.reasoning.demos import demos_to_dicts, plan_demos
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


def run_evaluate(cfg: SteperConfig, label: str | None = None) -> dict[str, Any]:
    """Evaluate ``evaluate.model`` (default: this run's trained student) on every dev set;
    ``label`` names the run in comparison reports (default: from its directory and loss mode)."""
    t0 = time.perf_counter()
    ecfg = cfg.evaluate
    out = RunLayout(cfg).evaluate
    model = resolved(ecfg.model or trained_student(cfg, "evaluate.model", ecfg.student_engine), "evaluate.model")
    records: dict[str, list[QuestionRecord]] = {}
    bad: dict[str, int] = {}
    unanswerable: dict[str, int] = {}
    for spec in cfg.data.dev:
        result = read_dataset(spec.path, spec.format, ecfg.limit or spec.limit, name=spec.name)
        # As the official MuSiQue scorer: answers are scored on answerable questions only; the
        # unanswerable twins (no answerability is predicted here) are counted apart.
        unanswerable[spec.name] = sum(not r.answerable for r in result.records)
        records[spec.name] = [r for r in result.records if r.answers and r.answerable]
        bad[spec.name] = len(result.bad) + len(result.records) - len(records[spec.name]) - unanswerable[spec.name]
    total = sum(len(v) for v in records.values())
    if total == 0:
        raise UserError("the dev sets have no questions with gold answers to evaluate; check data.dev")
    indexes = dev_indexes(cfg)
    demos, demo_info = ({}, {})
    if ecfg.prompt == "teacher" and model.kind != "evidence":  # demonstrations from the train sets only
        demos, demo_info = plan_demos(cfg, list(records))

    stage_kwargs = {"model": model.model_dump(), "prompt": ecfg.prompt, "reasoning": cfg.reasoning.model_dump(),
                    "indexes": indexes, "k": cfg.retrieval.k,
                    "demos": {name: demos_to_dicts(d) for name, d in demos.items()}}
    pool = ActorPool(ecfg.replicas, ecfg.batch_size, ecfg.num_cpus, ecfg.num_gpus, "evaluate")
    rows_by_dataset: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in records}
    t_run = time.perf_counter()
    pending = [r for recs in records.values() for r in recs]
    for rows in run_reasoner_job(pending, EvalStage, stage_kwargs, model, pool):
        for row in rows:
            rows_by_dataset[row["dataset"]][row["question_id"]] = row  # a retried task overwrites
    done = sum(len(v) for v in rows_by_dataset.values())
    run_s = time.perf_counter() - t_run

    metrics = {}
    for name, recs in records.items():
        rows = [rows_by_dataset[name][r.id] for r in recs if r.id in rows_by_dataset[name]]
        path = predictions_file(out, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        metrics[name] = {**dataset_metrics(rows), "skipped_records": bad[name],
                         "unanswerable_not_scored": unanswerable[name]}
    tokens = sum(r["num_tokens"] for rows in rows_by_dataset.values() for r in rows.values())
    summary = {
        "command": "evaluate",
        "out": str(out),
        "model": {"kind": model.kind, "model": model.model},
        "prompt": ecfg.prompt,
        "corpus": cfg.data.corpus,  # what the indexes held (data.corpus)
        "label": label,
        "demos": demo_info,
        "metrics": metrics,
        "questions": done,
        "questions_per_s": round(done / run_s, 3) if run_s else None,
        "tokens_per_s": round(tokens / run_s, 1) if run_s else None,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(out, summary)
    return summary

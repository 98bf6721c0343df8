"""EvalStage: the Ray Data UDF of evaluation. One instance per actor holds the model and one
retriever per dev set (loaded once); each call runs the step-wise loop over a batch of questions
and returns one scored prediction per question. Plain Python: it runs without Ray too."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from steper_ray.config import GeneratorConfig, ReasoningConfig
from steper_ray.data.records import QuestionRecord
from steper_ray.evaluate.scoring import prediction_row
from steper_ray.reasoning.generators.evidence import EvidenceGenerator
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.reasoning.isolate import run_isolated
from steper_ray.reasoning.loop import PromptFn, Question, StepwiseReasoner, Trace, student_prompt_fn
from steper_ray.reasoning.prompts import TeacherPrompt
from steper_ray.retrieval import load_index
from steper_ray.retrieval.protocol import Retriever


class EvalStage:
    def __init__(self, model: dict[str, Any], prompt: str, reasoning: dict[str, Any],
                 indexes: dict[str, str], k: int):
        self.model = GeneratorConfig(**model)
        self.reasoning = ReasoningConfig(**reasoning)
        self.k = k
        self.retrievers: dict[str, Retriever] = {name: load_index(path) for name, path in indexes.items()}
        self.generator = None if self.model.kind == "evidence" else build_generator(self.model)
        self.prompt_fn: PromptFn = student_prompt_fn
        if prompt == "teacher":
            self.prompt_fn = TeacherPrompt.load(self.reasoning.teacher_prompt).render

    def _run(self, dataset: str, records: list[QuestionRecord]) -> list[Trace]:
        reasoner = StepwiseReasoner(
            self.retrievers[dataset], self.generator or EvidenceGenerator(records), self.prompt_fn,
            max_steps=self.reasoning.max_steps, k=self.k, max_passages=self.reasoning.max_passages,
        )
        return reasoner.run([Question(r.id, r.question) for r in records])

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records = [QuestionRecord.from_dict(json.loads(x)) for x in batch["record"]]
        by_dataset: dict[str, list[QuestionRecord]] = defaultdict(list)
        for rec in records:  # each dev set has its own index
            by_dataset[rec.dataset].append(rec)
        rows: dict[str, list[Any]] = {"question_id": [], "prediction": []}
        for dataset, recs in by_dataset.items():
            traces = run_isolated(lambda rs, d=dataset: self._run(d, rs), recs)
            for rec, trace in zip(recs, traces):
                rows["question_id"].append(rec.id)
                rows["prediction"].append(json.dumps(prediction_row(trace, rec)))
        return rows

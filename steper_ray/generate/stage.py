"""TeacherStage: the Ray Data UDF. One instance per actor holds the engine and the retriever
(loaded once); each call runs the step-wise loop over a batch of questions, filters the
traces and returns one row per question. Plain Python: it runs without Ray too."""

from __future__ import annotations

import json
from typing import Any

from steper_ray.config import GenerateConfig, ReasoningConfig
from steper_ray.data.records import QuestionRecord
from steper_ray.generate.examples import trace_examples
from steper_ray.generate.filter import drop_reason
from steper_ray.reasoning.generators.evidence import EvidenceGenerator
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.reasoning.isolate import run_isolated
from steper_ray.reasoning.loop import Question, StepwiseReasoner, Trace
from steper_ray.reasoning.prompts import StepState, TeacherPrompt
from steper_ray.retrieval import load_index


class TeacherStage:
    def __init__(self, generate: dict[str, Any], reasoning: dict[str, Any], index: str, k: int):
        self.cfg = GenerateConfig(**generate)
        self.reasoning = ReasoningConfig(**reasoning)
        self.k = k
        self.retriever = load_index(index)
        self.generator = None if self.cfg.teacher.kind == "evidence" else build_generator(self.cfg.teacher)
        self.teacher_prompt = TeacherPrompt.load(self.reasoning.teacher_prompt)

    def _prompt(self, state: StepState, final: bool) -> str:
        return self.teacher_prompt.render(state, final)

    def _run(self, records: list[QuestionRecord]) -> list[Trace]:
        generator = self.generator or EvidenceGenerator(records)
        reasoner = StepwiseReasoner(
            self.retriever, generator, self._prompt,
            max_steps=self.reasoning.max_steps, k=self.k, max_passages=self.reasoning.max_passages,
        )
        return reasoner.run([Question(r.id, r.question) for r in records])

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records = [QuestionRecord.from_dict(json.loads(x)) for x in batch["record"]]
        traces = run_isolated(self._run, records)
        rows: dict[str, list[Any]] = {"question_id": [], "trace": [], "examples": []}
        for rec, trace in zip(records, traces):
            reason = drop_reason(trace, rec.answers, self.cfg.filter)
            row = {**trace.to_dict(), "dataset": rec.dataset, "answers": rec.answers,
                   "kept": reason is None, "drop_reason": reason}
            rows["question_id"].append(rec.id)
            rows["trace"].append(json.dumps(row))
            rows["examples"].append(json.dumps(trace_examples(trace) if reason is None else []))
        return rows

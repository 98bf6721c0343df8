"""ReasonerStage: the base of the Ray Data UDFs that run the step-wise loop over batches of
questions (teacher generation and evaluation; the job is ``reasoning.job``). One instance per
actor holds the engine, one retriever per index and one prompt builder per dataset (loaded
once); each call groups its batch
by dataset, runs the loop with one question's failure isolated from the others, and hands the
(record, trace) pairs to the subclass, which makes its rows. Batches are Arrow tables both ways.
Plain Python: it runs without Ray.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa

from steper_ray.config import GeneratorConfig, ReasoningConfig
from steper_ray.data.record_table import records_from_table
from steper_ray.data.records import QuestionRecord
from steper_ray.models.prepare import resolved
from steper_ray.models.prompt_format import builder_for
from steper_ray.reasoning.demos import demos_from_dicts
from steper_ray.reasoning.generators.evidence import EvidenceGenerator
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.reasoning.generators.protocol import Sampling
from steper_ray.reasoning.isolate import run_isolated
from steper_ray.reasoning.loop import Question, StepwiseReasoner, Trace
from steper_ray.reasoning.prompts import PromptBuilder, with_demos
from steper_ray.reasoning.steps import RetryPolicy
from steper_ray.retrieval import load_index
from steper_ray.retrieval.protocol import Retriever

ANY_DATASET = "*"  # the index key used for every dataset without its own


def reasoner(retriever: Any, generator: Any, prompt: PromptBuilder, reasoning: ReasoningConfig,
             k: int, max_steps: int | None = None, sampling: Sampling | None = None) -> StepwiseReasoner:
    """The loop with this config's step settings (``max_steps`` and ``sampling`` override, e.g.
    per request). An async caller that only drives ``machine`` may pass None for both engines."""
    return StepwiseReasoner(
        retriever, generator, prompt, max_steps=max_steps or reasoning.max_steps, k=k,
        max_passages=reasoning.max_passages, step_text=reasoning.step_text,
        retry=RetryPolicy(reasoning.retry_min_tokens, reasoning.retry_temperature, reasoning.max_attempts),
        sampling=sampling,
    )


class ReasonerStage:
    def __init__(self, model: dict[str, Any], role: str, reasoning: dict[str, Any], indexes: dict[str, str],
                 k: int, demos: dict[str, list[dict[str, Any]]] | None = None):
        self.model = resolved(GeneratorConfig(**model))
        self.reasoning = ReasoningConfig(**reasoning)
        self.k = k
        self.retrievers: dict[str, Retriever] = {name: load_index(path) for name, path in indexes.items()}
        self.generator = None if self.model.kind == "evidence" else build_generator(self.model)
        self.base = builder_for(self.model, role, self.reasoning)
        self.builders = {name: with_demos(self.base, demos_from_dicts(rows))
                         for name, rows in (demos or {}).items() if rows}

    def traces(self, records: list[QuestionRecord]) -> list[tuple[QuestionRecord, Trace]]:
        """Run the loop over ``records``, grouped by dataset (index and demonstrations)."""
        by_dataset: dict[str, list[QuestionRecord]] = defaultdict(list)
        for rec in records:
            by_dataset[rec.dataset].append(rec)
        out: list[tuple[QuestionRecord, Trace]] = []
        for dataset, recs in by_dataset.items():
            retriever = self.retrievers.get(dataset) or self.retrievers[ANY_DATASET]
            builder = self.builders.get(dataset, self.base)

            def run(rs: list[QuestionRecord], r: Retriever = retriever, b: PromptBuilder = builder) -> list[Trace]:
                generator = self.generator or EvidenceGenerator(rs)
                return reasoner(r, generator, b, self.reasoning, self.k).run([Question(x.id, x.question) for x in rs])

            out += list(zip(recs, run_isolated(run, recs)))
        return out

    def rows(self, pairs: list[tuple[QuestionRecord, Trace]]) -> pa.Table:
        """The subclass's output rows for these (record, trace) pairs, one or more per question."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One Ray Data batch: question records (``data.record_table`` rows) in, output rows out."""
        return self.rows(self.traces(records_from_table(batch)))

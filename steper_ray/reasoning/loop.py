"""StepwiseReasoner: the IRCoT-style loop shared by teacher generation, evaluation and serving.

Many questions advance together: each step is one batched retrieval and one batched generate
call over the questions still active. Step 1 (init) retrieves with the question; step s > 1
retrieves with the previous sentence. A step whose output carries the answer marker ends the
question (agg); at ``max_steps`` the step is forced to be the final one. If the init step
already answers, one more (agg) step runs, so every finished trace has an init and an agg.
No Ray in here: callers wrap it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from steper_ray.reasoning.answer import has_answer_marker, parse_answer
from steper_ray.reasoning.generators.protocol import Generator, GenRequest
from steper_ray.reasoning.prompts import PromptPassage, StepState, student_prompt
from steper_ray.retrieval.protocol import Retriever

log = logging.getLogger(__name__)

PromptFn = Callable[[StepState, bool], str]


def student_prompt_fn(state: StepState, final: bool) -> str:
    return student_prompt(state)


@dataclass
class StepRecord:
    step: int
    task: str  # init | exp | agg
    query: str
    retrieved_ids: list[str]
    prompt: str  # what the generator saw (teacher prompt for a teacher)
    student_prompt: str  # the student's view of the same state: the training prompt
    output: str
    num_tokens: int


@dataclass
class Question:
    id: str
    question: str


@dataclass
class Trace:
    question_id: str
    question: str
    steps: list[StepRecord] = field(default_factory=list)
    passages: list[PromptPassage] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None

    @property
    def final_output(self) -> str:
        return self.steps[-1].output if self.steps else ""

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "question": self.question,
            "steps": [asdict(s) for s in self.steps],
            "passage_ids": [p.id for p in self.passages],
            "answer": self.answer,
            "final_output": self.final_output,
            "num_steps": len(self.steps),
            "num_tokens": self.num_tokens,
            "error": self.error,
        }


def _query_from(output: str) -> str:
    """Next query: the previous sentence, without an answer marker's boilerplate."""
    return output.replace("So the answer is:", "").strip() or output


class StepwiseReasoner:
    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        prompt_fn: PromptFn = student_prompt_fn,
        max_steps: int = 5,
        k: int = 4,
        max_passages: int = 16,
    ):
        if max_steps < 2:
            raise ValueError("max_steps must be at least 2 (an init and an agg step)")
        self.retriever = retriever
        self.generator = generator
        self.prompt_fn = prompt_fn
        self.max_steps = max_steps
        self.k = k
        self.max_passages = max_passages

    def run(self, questions: Sequence[Question]) -> list[Trace]:
        traces = [Trace(q.id, q.question) for q in questions]
        for _ in self.steps(questions, traces):
            pass
        return traces

    def steps(self, questions: Sequence[Question], traces: list[Trace]) -> Iterator[tuple[int, StepRecord]]:
        """Run the loop, filling ``traces`` in place and yielding (question index, step) as each
        step is produced (serving streams these)."""
        states = [StepState(q.question) for q in questions]
        seen: list[set[str]] = [set() for _ in questions]
        force_final = [False] * len(questions)
        active = list(range(len(questions)))
        for step in range(1, self.max_steps + 1):
            if not active:
                break
            queries = [
                questions[i].question if step == 1 else _query_from(traces[i].steps[-1].output)
                for i in active
            ]
            hits = self.retriever.search(queries, self.k)
            requests = []
            for i, query, hs in zip(active, queries, hits):
                for h in hs:
                    if h.id not in seen[i] and len(states[i].passages) < self.max_passages:
                        seen[i].add(h.id)
                        states[i].passages.append(PromptPassage(h.id, h.title, h.text))
                final = step == self.max_steps or force_final[i]
                requests.append(GenRequest(self.prompt_fn(states[i], final), questions[i].id, step, final))
            results = self.generator.generate(requests)
            still_active = []
            for i, query, hs, req, res in zip(active, queries, hits, requests, results):
                trace = traces[i]
                if res.error is not None or not res.text.strip():
                    trace.error = res.error or f"empty output at step {step}"
                    trace.passages = list(states[i].passages)
                    continue
                marker = has_answer_marker(res.text)
                task = "init" if step == 1 else ("agg" if req.final or marker else "exp")
                trace.steps.append(
                    StepRecord(
                        step=step,
                        task=task,
                        query=query,
                        retrieved_ids=[h.id for h in hs],
                        prompt=req.prompt,
                        student_prompt=student_prompt(states[i]),
                        output=res.text.strip(),
                        num_tokens=res.num_tokens,
                    )
                )
                states[i].reasoning.append(res.text.strip())
                if task == "agg":
                    trace.answer = parse_answer(res.text)
                    trace.passages = list(states[i].passages)
                else:
                    force_final[i] = marker  # init already answered: close with one agg step
                    still_active.append(i)
                yield i, trace.steps[-1]
            active = still_active

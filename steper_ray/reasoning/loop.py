"""StepwiseReasoner: the IRCoT-style loop shared by teacher generation, evaluation and serving.

Many questions advance together: each step is one batched retrieval and one batched generate
call over the questions still active (plus one call per retry round, over the questions whose
output had nothing usable). Step 1 (init) retrieves with the question; step s > 1 retrieves
with the previous sentence. A step whose output carries the answer marker ends the question
(agg); at ``max_steps`` the step is forced to be the final one; if the init step already
answers, one more (agg) step runs, so every finished trace has an init and an agg.

The loop is a step machine without I/O (``StepwiseReasoner.machine``): it yields ``Search`` and
``Generate`` requests and takes their results, and ``StepDone`` as each step is produced. The
synchronous drivers here (``run``, ``steps``) call a Retriever and a Generator; an async caller
can drive the same machine with awaitables. No Ray in here.
"""

from __future__ import annotations

import logging
from collections.abc import Generator as PyGenerator
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from steper_ray.reasoning.answer import ANSWER_MARKER, has_answer_marker, parse_answer
from steper_ray.reasoning.generators.protocol import Generation, Generator, GenRequest, Sampling
from steper_ray.reasoning.prompts import PromptBuilder, PromptPassage, StepState, student_prompt
from steper_ray.reasoning.steps import (
    Attempt,
    RetryPolicy,
    StepText,
    failure_reason,
    next_attempt,
    retry_note,
    shape_step,
)
from steper_ray.retrieval.protocol import Hit, Retriever

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """One step of a trace: the record every stage, the examples and the reports share."""

    step: int
    task: str  # init | exp | agg
    query: str
    retrieved_ids: list[str]
    prompt: str  # what the generator saw last (teacher prompt for a teacher)
    student_prompt: str  # the student's view of the same state, completion layout
    output: str  # the step's sentence, after shaping
    num_tokens: int  # generated over every attempt of this step
    num_passages: int = 0  # passages visible at this step (a prefix of the trace's passages)
    new_passages: int = 0  # passages this step's retrieval added
    attempts: int = 1
    notes: list[str] = field(default_factory=list)  # shaping fixes and retries (steps.py)


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
    error: str | None = None  # engine failure or a prompt over the length limit
    failure: str | None = None  # the model's output stayed unusable after every retry

    @property
    def final_output(self) -> str:
        return self.steps[-1].output if self.steps else ""

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.steps)

    def state_at(self, index: int) -> StepState:
        """The ``StepState`` step ``steps[index]`` was generated from."""
        s = self.steps[index]
        return StepState(self.question, list(self.passages[: s.num_passages]),
                         [x.output for x in self.steps[:index]])

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
            "failure": self.failure,
        }


@dataclass(frozen=True)
class Search:
    """Machine request: top-``k`` hits for each query."""

    queries: list[str]
    k: int


@dataclass(frozen=True)
class Generate:
    """Machine request: one generation per request."""

    requests: list[GenRequest]


@dataclass(frozen=True)
class StepDone:
    """Machine event: question ``index`` finished ``step`` (answered with None)."""

    index: int
    step: StepRecord


Machine = PyGenerator["Search | Generate | StepDone", Any, list[Trace]]


def _query_from(output: str) -> str:
    """Next query: the previous sentence, without an answer marker's boilerplate."""
    return output.replace(ANSWER_MARKER, "").strip() or output


class StepwiseReasoner:
    """The loop. ``prompt`` renders each step (the student's bare prompt by default);
    ``max_passages`` caps the accumulated passages (None: ``k * max_steps``, never limiting);
    ``step_text`` and ``retry`` say how raw outputs become steps (``steper_ray.reasoning.steps``);
    ``sampling`` overrides the engine's temperature, max_tokens and seed for every step (a served
    request's settings; None: the engine's)."""

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        prompt: PromptBuilder | None = None,
        max_steps: int = 5,
        k: int = 4,
        max_passages: int | None = None,
        step_text: StepText = "first_sentence",
        retry: RetryPolicy | None = None,
        sampling: Sampling | None = None,
    ):
        if max_steps < 2:
            raise ValueError("max_steps must be at least 2 (an init and an agg step)")
        self.retriever = retriever
        self.generator = generator
        self.prompt = prompt or PromptBuilder.student()
        self.max_steps = max_steps
        self.k = k
        self.max_passages = max_passages if max_passages is not None else k * max_steps
        self.step_text = step_text
        self.retry = retry or RetryPolicy()
        self.sampling = sampling or Sampling()

    # --- drivers ------------------------------------------------------------------------------

    def run(self, questions: Sequence[Question]) -> list[Trace]:
        traces = [Trace(q.id, q.question) for q in questions]
        for _ in self.steps(questions, traces):
            pass
        return traces

    def steps(self, questions: Sequence[Question], traces: list[Trace]) -> Iterator[tuple[int, StepRecord]]:
        """Run the loop with this reasoner's retriever and generator, filling ``traces`` in place
        and yielding (question index, step) as each step is produced (serving streams these)."""
        machine = self.machine(questions, traces)
        reply: Any = None
        while True:
            try:
                event = machine.send(reply)
            except StopIteration:
                return
            if isinstance(event, Search):
                reply = self.retriever.search(event.queries, event.k)
            elif isinstance(event, Generate):
                reply = self.generator.generate(event.requests)
            else:
                reply = None
                yield event.index, event.step

    # --- the machine --------------------------------------------------------------------------

    def machine(self, questions: Sequence[Question], traces: list[Trace] | None = None) -> Machine:
        """The loop as a generator: yields Search / Generate (send back their results) and
        StepDone (send None); returns the traces (``traces`` is filled in place when given)."""
        traces = traces if traces is not None else [Trace(q.id, q.question) for q in questions]
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
            hits: list[list[Hit]] = yield Search(queries, self.k)
            added = {}
            for i, hs in zip(active, hits):
                before = len(states[i].passages)
                for h in hs:
                    if h.id not in seen[i] and len(states[i].passages) < self.max_passages:
                        seen[i].add(h.id)
                        states[i].passages.append(PromptPassage(h.id, h.title, h.text))
                added[i] = len(states[i].passages) - before
            done = yield from self._generate_step(step, active, questions, traces, states, force_final)
            still_active = []
            for i, query, hs in zip(active, queries, hits):
                if i not in done:
                    continue  # failed: error or failure is set
                text, req, tokens, attempts, notes = done[i]
                marker = has_answer_marker(text)
                task = "init" if step == 1 else ("agg" if req.final or marker else "exp")
                record = StepRecord(
                    step=step, task=task, query=query, retrieved_ids=[h.id for h in hs],
                    prompt=req.prompt, student_prompt=student_prompt(states[i]), output=text,
                    num_tokens=tokens, num_passages=len(states[i].passages), new_passages=added[i],
                    attempts=attempts, notes=notes,
                )
                traces[i].steps.append(record)
                states[i].reasoning.append(text)
                if task == "agg":
                    traces[i].answer = parse_answer(text)
                else:
                    force_final[i] = marker  # init already answered: close with one agg step
                    still_active.append(i)
                yield StepDone(i, record)
            active = still_active
        for trace, state in zip(traces, states):
            trace.passages = list(state.passages)
        return traces

    def _generate_step(self, step: int, active: list[int], questions: Sequence[Question], traces: list[Trace],
                       states: list[StepState], force_final: list[bool]
                       ) -> PyGenerator[Generate, list[Generation], dict[int, tuple[str, GenRequest, int, int, list[str]]]]:
        """Generate this step for every active question, retrying unusable outputs in batched
        rounds; returns, per question that got a step, (text, last request, tokens, attempts,
        notes). A question that failed gets ``error`` or ``failure`` set instead."""
        attempt = {i: Attempt(final=step == self.max_steps or force_final[i]) for i in active}
        notes: dict[int, list[str]] = {i: [] for i in active}
        tokens = dict.fromkeys(active, 0)
        done: dict[int, tuple[str, GenRequest, int, int, list[str]]] = {}
        pending = list(active)
        sampling = self.sampling
        while pending:
            requests = []
            for i in pending:
                a = attempt[i]
                rendered = self.prompt.render(states[i], a.final)
                temperature = sampling.temperature if a.temperature is None else a.temperature
                requests.append(GenRequest(rendered.text, questions[i].id, step, a.final, rendered.messages,
                                           a.min_tokens, temperature, sampling.max_tokens, sampling.seed))
            results: list[Generation] = yield Generate(requests)
            retry = []
            for i, req, res in zip(pending, requests, results):
                tokens[i] += res.num_tokens
                if res.error is not None:
                    traces[i].error = res.error
                    continue
                shaped = shape_step(res.text, res.finish_reason, states[i].reasoning, self.step_text)
                notes[i] += shaped.notes
                if shaped.problem is None:
                    done[i] = (shaped.text, req, tokens[i], attempt[i].number, notes[i])
                    continue
                nxt = next_attempt(shaped.problem, attempt[i], self.retry)
                if nxt is None:
                    traces[i].failure = f"{failure_reason(shaped.problem)} (step {step})"
                    continue
                notes[i].append(retry_note(attempt[i], nxt))
                attempt[i] = nxt
                retry.append(i)
            pending = retry
        return done

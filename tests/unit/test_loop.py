from __future__ import annotations

from collections.abc import Sequence

import pytest

from steper_ray.config import BM25Config
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.evaluate.metrics import answer_scores
from steper_ray.reasoning.generators.evidence import EvidenceGenerator, evidence_sentences
from steper_ray.reasoning.generators.protocol import Generation, GenRequest
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.reasoning.prompts import student_prompt, StepState, PromptPassage
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.retrieval.protocol import Hit


class FakeRetriever:
    """Passages named after the query: 'query#rank'."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.calls.append(list(queries))
        return [[Hit(f"{q}#{i}", f"T {q}", f"text {q} {i}", 1.0 / (i + 1)) for i in range(k)] for q in queries]

    def __len__(self) -> int:
        return 100


class ScriptedGenerator:
    """Outputs from a script keyed by (question id, step); records every request."""

    def __init__(self, script: dict[tuple[str, int], str]):
        self.script = script
        self.requests: list[list[GenRequest]] = []

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        self.requests.append(list(requests))
        out = []
        for r in requests:
            text = self.script.get((r.question_id, r.step))
            out.append(Generation(text, len(text.split())) if text is not None else Generation("", 0, "boom"))
        return out


def test_loop_produces_the_exact_trace() -> None:
    script = {
        ("q1", 1): "A is B.", ("q1", 2): "B is C.", ("q1", 3): "So the answer is: C.",
        ("q2", 1): "So the answer is: X.", ("q2", 2): "X it is. So the answer is: X.",
        ("q3", 1): "first.", ("q3", 2): "second.", ("q3", 3): "third.", ("q3", 4): "no marker",
    }
    gen = ScriptedGenerator(script)
    retr = FakeRetriever()
    reasoner = StepwiseReasoner(retr, gen, max_steps=4, k=2, max_passages=5)
    traces = reasoner.run([Question("q1", "Q one?"), Question("q2", "Q two?"), Question("q3", "Q three?"),
                           Question("q4", "Q four?")])
    t1, t2, t3, t4 = traces
    # q1: init, exp, agg (marker at step 3)
    assert [(s.step, s.task) for s in t1.steps] == [(1, "init"), (2, "exp"), (3, "agg")]
    assert [s.query for s in t1.steps] == ["Q one?", "A is B.", "B is C."]
    assert t1.answer == "C" and t1.error is None
    assert t1.steps[0].retrieved_ids == ["Q one?#0", "Q one?#1"]
    assert [p.id for p in t1.passages] == ["Q one?#0", "Q one?#1", "A is B.#0", "A is B.#1", "B is C.#0"]  # capped at 5
    assert t1.steps[1].student_prompt == student_prompt(StepState(
        "Q one?", [PromptPassage(f"{q}#{i}", f"T {q}", f"text {q} {i}") for q in ("Q one?", "A is B.") for i in range(2)],
        ["A is B."]))
    # q2: the init step answered, so exactly one more step, forced final
    assert [(s.step, s.task) for s in t2.steps] == [(1, "init"), (2, "agg")]
    assert t2.steps[1].query == "X."  # the marker boilerplate is not a query
    assert t2.answer == "X"
    # q3: max_steps reached; the last step is agg even without a marker
    assert [s.task for s in t3.steps] == ["init", "exp", "exp", "agg"] and t3.answer is None
    # q4: generator error at step 1
    assert t4.steps == [] and t4.error == "boom"
    # batching: one generate call per step over the questions still active
    assert [len(b) for b in gen.requests] == [4, 3, 2, 1]
    assert [len(c) for c in retr.calls] == [4, 3, 2, 1]
    assert [r.final for r in gen.requests[1]] == [False, True, False]  # q2's step 2 is forced final
    assert all(r.final for r in gen.requests[3])


def test_max_steps_must_allow_init_and_agg() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        StepwiseReasoner(FakeRetriever(), ScriptedGenerator({}), max_steps=1)


def test_evidence_teacher_with_real_bm25_answers_every_question() -> None:
    records = read_dataset("sample:musique/train.json").records + read_dataset("sample:hotpotqa/train.json").records
    retriever = BM25Retriever.build(extract_corpus(records), BM25Config())
    traces = StepwiseReasoner(retriever, EvidenceGenerator(records), max_steps=5, k=4).run(
        [Question(r.id, r.question) for r in records])
    for rec, trace in zip(records, traces):
        assert trace.error is None
        assert answer_scores(trace.answer or "", rec.answers)["em"] == 1.0
        n_evidence = min(len(evidence_sentences(rec)), 4)
        assert len(trace.steps) == max(n_evidence, 1) + 1
        assert trace.steps[0].task == "init" and trace.steps[-1].task == "agg"
        assert all(len(s.retrieved_ids) == 4 for s in trace.steps)

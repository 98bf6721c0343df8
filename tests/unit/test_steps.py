"""Raw model output -> one reasoning step: every output shape real instruct models produce."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from steper_ray.reasoning.generators.protocol import Generation, GenRequest
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.reasoning.steps import Attempt, RetryPolicy, next_attempt, shape_step, split_sentences
from steper_ray.retrieval.protocol import Hit


@pytest.mark.parametrize(
    ("raw", "finish", "earlier", "step", "notes", "problem"),
    [
        # a clean sentence
        ("Marta Velde was born in Bergen.", "stop", [], "Marta Velde was born in Bergen.", (), None),
        # leading newlines or spaces before the sentence
        ("\n\n  Marta Velde was born in Bergen.", "stop", [], "Marta Velde was born in Bergen.",
         ("leading_whitespace",), None),
        # a new example instead of a sentence
        ("Q: Who founded the glassworks?", "stop", [], "", ("new_example",), "new_example"),
        ("\nWikipedia Title: Bergen", "stop", [], "", ("leading_whitespace", "new_example"), "new_example"),
        # end-of-sequence as the first token
        ("", "eos", [], "", (), "eos_first"),
        ("", "stop", [], "", (), "empty"),
        # several sentences: the first is kept, as IRCoT does
        ("The U.S. Army was formed in 1775. It fought the British.", "stop", [],
         "The U.S. Army was formed in 1775.", ("multi_sentence",), None),
        # a sentence and the answer: both kept, the marker normalised
        ("Marta was born in Norway. So the answer is: Norway.", "stop", [],
         "Marta was born in Norway. So the answer is: Norway.", (), None),
        # cut by max_tokens mid-sentence
        ("Marta Velde was born in the city of", "length", [], "Marta Velde was born in the city of",
         ("truncated",), None),
        # cut after a complete first sentence: the sentence, not a truncation
        ("Marta was born in Bergen. She moved to", "length", [], "Marta was born in Bergen.",
         ("multi_sentence",), None),
        # the answer marker written differently
        ("The answer is Norway.", "stop", [], "So the answer is: Norway.", ("marker_variant",), None),
        ("Answer: Dr. No", "stop", [], "So the answer is: Dr. No.", ("marker_variant",), None),
        ('The answer to the question is: "Mark C. Taylor"', "stop", [], 'So the answer is: "Mark C. Taylor".',
         ("marker_variant",), None),
        ("Marta was born in Norway, so the answer is Norway.", "stop", [],
         "Marta was born in Norway. So the answer is: Norway.", ("marker_variant",), None),
        # a sentence repeated from an earlier step (a loop), whatever its case and punctuation
        ("marta velde was born in Bergen", "stop", ["Marta Velde was born in Bergen."], "", ("repeated",), "repeated"),
        # the answer field's prefix written again
        ("A: Marta Velde was born in Bergen.", "stop", [], "Marta Velde was born in Bergen.",
         ("answer_field_prefix",), None),
        # with min_tokens the newline no longer ends the step: the first line with text counts
        ("\nMarta Velde was born in Bergen.\nMore text", "stop", [], "Marta Velde was born in Bergen.",
         ("leading_whitespace",), None),
    ],
)
def test_shape_step_cases(raw: str, finish: str, earlier: list[str], step: str, notes: tuple[str, ...],
                          problem: str | None) -> None:
    shaped = shape_step(raw, finish, earlier)
    assert (shaped.text, shaped.notes, shaped.problem) == (step, notes, problem)


def test_line_mode_keeps_every_sentence() -> None:
    shaped = shape_step("First fact. Second fact.", "stop", [], keep="line")
    assert shaped.text == "First fact. Second fact." and shaped.notes == ()


def test_sentence_splitter_keeps_abbreviations_and_decimals() -> None:
    assert split_sentences("Dr. No earned 3.5 million in the U.S. in 1962. It was a hit.") == [
        "Dr. No earned 3.5 million in the U.S. in 1962.", "It was a hit."]


def test_retry_plan() -> None:
    policy = RetryPolicy(min_tokens=4, temperature=0.7, max_attempts=3)
    first = Attempt(final=False)
    second = next_attempt("empty", first, policy)
    assert second == Attempt(False, 4, None, 2)  # again, with tokens that cannot end the step
    assert next_attempt("eos_first", second, policy) == Attempt(True, 4, 0.7, 3)  # the sampled fallback
    assert next_attempt("empty", Attempt(True, 4, 0.7, 3), policy) is None  # tries spent
    assert next_attempt("repeated", first, policy) == Attempt(True, 0, None, 2)  # done or looping: answer
    assert next_attempt("new_example", Attempt(True), policy) == Attempt(True, 4, None, 2)
    greedy = RetryPolicy(min_tokens=4, temperature=0.0, max_attempts=3)
    assert next_attempt("eos_first", second, greedy) == Attempt(True, 4, None, 3)
    assert next_attempt("repeated", Attempt(True, 4, None, 2), greedy) is None


class _Retriever:
    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [[Hit(f"{q}#{i}", f"T{i}", f"text {i}", 1.0) for i in range(k)] for q in queries]

    def __len__(self) -> int:
        return 10


class _Scripted:
    """Answers (question, step, min_tokens > 0, final) with a scripted raw output."""

    def __init__(self, script: dict[tuple[str, int, bool, bool], Generation]):
        self.script = script
        self.calls: list[list[GenRequest]] = []

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        self.calls.append(list(requests))
        return [self.script.get((r.question_id, r.step, r.min_tokens > 0, r.final), Generation("", 1, None, "eos"))
                for r in requests]


def test_loop_retries_and_counts_every_outcome() -> None:
    g = Generation
    script = {
        # q1: EOS at step 2, then a sentence with min_tokens
        ("q1", 1, False, False): g("A is B.", 4),
        ("q1", 2, False, False): g("", 1, None, "eos"),
        ("q1", 2, True, False): g("\nB is C.", 5),
        ("q1", 3, False, True): g(" So the answer is: C.", 6),
        # q2: repeats itself at step 2, so step 2 is asked again as the final step
        ("q2", 1, False, False): g("X is Y.", 4),
        ("q2", 2, False, False): g("X is Y.", 4),
        ("q2", 2, False, True): g("The answer is Y", 4),
        # q3: nothing usable, ever
    }
    gen = _Scripted(script)
    traces = StepwiseReasoner(_Retriever(), gen, max_steps=3, k=1, retry=RetryPolicy(temperature=0.0)).run(
        [Question("q1", "one?"), Question("q2", "two?"), Question("q3", "three?")])
    t1, t2, t3 = traces
    assert [(s.task, s.output) for s in t1.steps] == [("init", "A is B."), ("exp", "B is C."), ("agg", "So the answer is: C.")]
    assert t1.steps[1].notes == ["retried_min_tokens", "leading_whitespace"] and t1.steps[1].attempts == 2
    assert t1.steps[1].num_tokens == 6 and t1.answer == "C" and t1.failure is None
    assert t1.steps[2].notes == ["leading_whitespace"]
    assert [(s.task, s.output) for s in t2.steps] == [("init", "X is Y."), ("agg", "So the answer is: Y.")]
    assert t2.steps[1].notes == ["repeated", "retried_as_final", "marker_variant"] and t2.answer == "Y"
    assert t3.steps == [] and t3.error is None
    assert t3.failure == "empty step after retries (step 1)"
    # retries go out in batched rounds: step 1 (3 questions), q3's two retries, step 2 (q1, q2),
    # its retry round (q1 with min_tokens, q2 as final), step 3 (q1, final)
    assert [len(c) for c in gen.calls] == [3, 1, 1, 2, 2, 1]
    assert all(s.new_passages == 1 and s.num_passages == s.step for t in traces for s in t.steps)

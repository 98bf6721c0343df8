"""One reasoning step out of a model's raw output, and what to do when there is none.

Real instruct models (a 70B teacher as much as a 135M one) rarely write exactly one clean
sentence per call. ``shape_step`` turns the raw continuation into the step's sentence and names
everything it had to fix, each counted in the run's summary:

==================== =====================================================================
note                 what the model did (what the step becomes)
==================== =====================================================================
leading_whitespace   spaces or blank lines before the sentence (stripped)
answer_field_prefix  repeated the ``A:`` of the answer field (stripped)
multi_sentence       several sentences (the first is kept, as IRCoT does; ``step_text: line``
                     keeps the whole line); with an answer marker, the marker's sentence too
truncated            cut by ``max_tokens`` inside a sentence (kept as written)
marker_variant       "the answer is X", "Answer: X", ... (rewritten ``So the answer is: X.``)
new_example          started a new example (``Q:`` / ``Wikipedia Title:``): nothing usable
eos_first            ended its turn at once (end-of-sequence first): nothing usable
empty                wrote nothing else usable
repeated             repeated an earlier step's sentence (a loop): not used
==================== =====================================================================

A step with nothing usable (or a repeat) is retried (``next_attempt``): first with ``min_tokens``
(the first tokens cannot end the step) and, when set, a sampled fallback; a repeat or a new
example asks for the final step at once. When the attempts run out the question ends with a
specific reason, never a generic error. Pure functions: no engine, no Ray.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from steper_ray.reasoning.answer import ANSWER_MARKER, last_marker

StepText = Literal["first_sentence", "line"]
Problem = Literal["empty", "eos_first", "new_example", "repeated"]

_NEW_EXAMPLE = re.compile(r"^(?:Q\s*:|Question\s*:|Wikipedia Title\s*:)", re.IGNORECASE)
_ANSWER_FIELD = re.compile(r"^A\s*:\s*")
_SENTENCE_END = (".", "!", "?", '"', "'", ")", "”", "’", "»")
_TRAILING = " \t.。!?;,"


@dataclass(frozen=True)
class ShapedStep:
    """The step's sentence ("" when nothing is usable), the fixes applied, and the problem that
    makes the step unusable (None when it can be used)."""

    text: str
    notes: tuple[str, ...] = ()
    problem: Problem | None = None


@dataclass(frozen=True)
class Attempt:
    """How a step is asked for: forced final (the closing cue), ``min_tokens`` that cannot end
    it, a temperature override (None: the engine's), and which try this is (1-based)."""

    final: bool
    min_tokens: int = 0
    temperature: float | None = None
    number: int = 1


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a step with nothing usable. ``min_tokens``: the retry's tokens that cannot
    end the step; ``temperature``: of the last try, a short sampled fallback (0: greedy, no
    fallback); ``max_attempts``: tries per step in all."""

    min_tokens: int = 4
    temperature: float = 0.7
    max_attempts: int = 3


@lru_cache(maxsize=1)
def _segmenter():  # type: ignore[no-untyped-def]
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """Sentences of one line of English (pysbd's rules: "U.S. Army", "Dr. No" and "3.5" do not
    split), stripped, empty ones dropped."""
    if not text.strip():
        return []
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _ends_sentence(text: str) -> bool:
    return text.rstrip().endswith(_SENTENCE_END)


def _with_marker(line: str, keep: StepText, notes: list[str]) -> str:
    """Rewrite a line holding an answer marker (any variant) as ``[sentence.] So the answer is: X.``"""
    m = last_marker(line)
    assert m is not None
    if m.group(0).strip() != ANSWER_MARKER:
        notes.append("marker_variant")
    after = split_sentences(line[m.end():])
    answer = after[0].strip().rstrip(_TRAILING).strip() if after else ""
    if len(after) > 1:
        notes.append("multi_sentence")
    before = split_sentences(line[:m.start()].rstrip(" ,;:-–—"))
    if keep == "first_sentence" and len(before) > 1:
        notes.append("multi_sentence")
        before = before[:1]
    prefix = " ".join(before)
    if prefix and not _ends_sentence(prefix):
        prefix += "."
    closing = f"{ANSWER_MARKER} {answer}." if answer else ANSWER_MARKER
    return f"{prefix} {closing}" if prefix else closing


def shape_step(text: str, finish_reason: str, earlier: list[str], keep: StepText = "first_sentence") -> ShapedStep:
    """The reasoning step in a raw continuation ``text`` that stopped for ``finish_reason``
    ('stop', 'eos', 'length'), given the earlier steps' sentences. See the module table."""
    notes: list[str] = []
    if text[:1].isspace():
        notes.append("leading_whitespace")
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if not lines:
        problem: Problem = "eos_first" if finish_reason == "eos" else "empty"
        return ShapedStep("", tuple(notes), problem)
    line = lines[0]
    if _NEW_EXAMPLE.match(line):
        return ShapedStep("", (*notes, "new_example"), "new_example")
    if _ANSWER_FIELD.match(line):
        notes.append("answer_field_prefix")
        line = _ANSWER_FIELD.sub("", line)
        if not line:
            return ShapedStep("", tuple(notes), "empty")
    if last_marker(line) is not None:
        out = _with_marker(line, keep, notes)
        if finish_reason == "length" and len(lines) == 1 and not _ends_sentence(line):
            notes.append("truncated")
        return ShapedStep(out, tuple(notes))
    sentences = split_sentences(line)
    if keep == "first_sentence" and len(sentences) > 1:
        notes.append("multi_sentence")
        out = sentences[0]
    else:
        out = " ".join(sentences)
        if finish_reason == "length" and len(lines) == 1 and not _ends_sentence(out):
            notes.append("truncated")
    if _norm(out) in {_norm(e) for e in earlier}:
        return ShapedStep("", (*notes, "repeated"), "repeated")
    return ShapedStep(out, tuple(notes))


def next_attempt(problem: Problem, current: Attempt, policy: RetryPolicy) -> Attempt | None:
    """How to ask again for a step whose output had ``problem``; None when the tries are spent.

    Nothing usable: ask the same step again with ``min_tokens``. A repeat or a new example means
    the model is done or looping: ask for the final step. The last try is a short sampled
    fallback (the final step, ``min_tokens``, ``policy.temperature``), since greedy decoding of
    the same prompt would only fail the same way again."""
    if current.number >= policy.max_attempts:
        return None
    nxt = current.number + 1
    if nxt == policy.max_attempts and policy.temperature > 0:
        return Attempt(True, policy.min_tokens, policy.temperature, nxt)
    if problem in ("empty", "eos_first"):
        if current.min_tokens == 0:
            return Attempt(current.final, policy.min_tokens, None, nxt)
        return Attempt(True, policy.min_tokens, None, nxt) if not current.final else None
    if not current.final:
        return Attempt(True, 0, None, nxt)
    return Attempt(True, policy.min_tokens, None, nxt) if current.min_tokens == 0 else None


def retry_note(previous: Attempt, nxt: Attempt) -> str:
    """The summary's name for a retry: ``retried_sampled``, ``retried_as_final`` or ``retried_min_tokens``."""
    if nxt.temperature is not None:
        return "retried_sampled"
    return "retried_as_final" if nxt.final and not previous.final else "retried_min_tokens"


def failure_reason(problem: Problem) -> str:
    """The drop reason of a question whose step stayed unusable after every try."""
    return {
        "empty": "empty step after retries",
        "eos_first": "empty step after retries",
        "new_example": "new example instead of a step after retries",
        "repeated": "repeated step after retries",
    }[problem]

"""The Generator protocol: a batch of step requests in, one result per request out.

A generator returns the model's raw continuation (up to the first newline that ends a step, the
end-of-sequence token or ``max_tokens``) and why it stopped. Turning that raw text into a
reasoning step (leading blank lines, several sentences, a new example, a cut sentence) is the
loop's job (``steper_ray.reasoning.steps``), the same for every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "eos", "length", "error"]


@dataclass(frozen=True)
class GenRequest:
    """One step to generate.

    ``prompt`` is the rendered text a local engine tokenises. ``messages`` holds the same prompt
    as chat messages (the last one an unfinished assistant turn) when it was built in the chat
    format; a remote chat API gets those instead of the text. ``min_tokens`` > 0 keeps the first
    tokens from ending the step (neither the newline stop nor end-of-sequence count there): the
    retry of an empty step. ``temperature``, ``max_tokens`` and ``seed`` override the engine's
    settings for this request (None: the engine's); ``min_tokens`` is capped at the request's
    ``max_tokens``.
    """

    prompt: str
    question_id: str = ""
    step: int = 1
    final: bool = False  # the aggregation step: the output must close with the answer
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs
    min_tokens: int = 0
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Sampling:
    """Per-request overrides of the engine's sampling settings that every step of one question
    gets (a served request's ``temperature``, ``max_tokens`` per step and ``seed``); None keeps
    the engine's. A step's sampled fallback keeps its own temperature (``steps.RetryPolicy``)."""

    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """The raw continuation (the newline that stopped it removed), its token count, why it
    stopped (``stop``: the step's newline; ``eos``: end of sequence; ``length``: max_tokens),
    or why it failed (``error`` set, ``finish_reason`` 'error'). ``prompt_tokens``: the
    prompt's length in tokens (0 where the engine does not say)."""

    text: str
    num_tokens: int = 0
    error: str | None = None
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0


def failed(message: str) -> Generation:
    """The result of a request that could not be generated (engine error, prompt too long)."""
    return Generation("", 0, message, "error")


@runtime_checkable
class Generator(Protocol):
    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Results in request order. A request that fails gets ``error`` set; the others are
        unaffected (one bad prompt never fails a batch): a generator never raises for one
        request's sake."""
        ...

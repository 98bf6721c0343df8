"""The Generator protocol: a batch of step requests in, one result per request out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GenRequest:
    prompt: str
    question_id: str = ""
    step: int = 1
    final: bool = False  # the aggregation step: the output must close with the answer


@dataclass(frozen=True)
class Generation:
    """One output sentence (the stop newline removed), its token count, or why it failed."""

    text: str
    num_tokens: int = 0
    error: str | None = None


@runtime_checkable
class Generator(Protocol):
    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Results in request order. A request that fails gets ``error`` set; the others are
        unaffected (one bad prompt never fails a batch)."""
        ...


def first_line(text: str) -> str:
    """A step is one line: keep what precedes the first newline."""
    return text.split("\n", 1)[0].strip()

"""The answer marker: ``So the answer is: <answer>``, and the ways models write it otherwise
("the answer is X", "Answer: X", "Therefore, the final answer is X"), which are read the same."""

from __future__ import annotations

import re

ANSWER_MARKER = "So the answer is:"
# The canonical marker and its variants: an optional connective, "the (final) answer is" with an
# optional colon, or "answer:". Case-insensitive.
_MARKER = re.compile(
    r"(?:\b(?:so|thus|therefore|hence)\b[\s,]*)?\b(?:the\s+)?(?:final\s+)?answer"
    r"(?:\s+is\b\s*[:：]?|\s*[:：])\s*",
    re.IGNORECASE,
)
_TRAILING = " \t\r\n.。!?;,\"'`*"


def has_answer_marker(text: str) -> bool:
    return _MARKER.search(text) is not None


def last_marker(text: str) -> re.Match[str] | None:
    """The last answer marker in ``text`` (canonical or a variant), or None."""
    matches = list(_MARKER.finditer(text))
    return matches[-1] if matches else None


def parse_answer(text: str) -> str | None:
    """The answer after the last marker (any case, colon optional), trailing punctuation and
    quotes removed; None when there is no marker or nothing follows it."""
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None
    answer = text[matches[-1].end():].split("\n")[0].strip(_TRAILING)
    return answer or None


def final_answer(text: str) -> str:
    """Best-effort answer for scoring: the marked answer, else the last sentence as written."""
    parsed = parse_answer(text)
    if parsed is not None:
        return parsed
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]
    return sentences[-1].strip(_TRAILING) if sentences else ""

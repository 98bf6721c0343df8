"""The answer marker: ``So the answer is: <answer>``, and the ways models write it otherwise
("the answer is X", "Answer: X", "Therefore, the final answer is X"), which are read the same."""

from __future__ import annotations

import re

ANSWER_MARKER = "So the answer is:"
# The canonical marker and its variants: an optional connective, "the (final) answer (to the
# question) is" with an optional colon, or "answer:". Case-insensitive.
_MARKER = re.compile(
    r"(?:\b(?:so|thus|therefore|hence)\b[\s,]*)?\b(?:the\s+)?(?:final\s+)?answer"
    r"(?:\s+to\s+(?:the|this)\s+question)?(?:\s+is\b\s*[:：]?|\s*[:：])\s*",
    re.IGNORECASE,
)
# Stripped from both ends one character at a time; quotes and brackets go by _strip_wrapping.
_TRAILING = " \t\r\n.。!?;,*"
# Quotation marks (straight, typographic, low-9, guillemets, CJK corner brackets, full-width)
# and brackets, opener -> closer. A pair comes off when it encloses the whole answer; a quote
# mark whose partner is not in the answer is stray and comes off alone. "Rush (band)" and
# 'the novel “Emma”' keep theirs.
_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "„": "“", "‚": "‘", "‟": "”", "‛": "’",
           "«": "»", "»": "«", "‹": "›", "›": "‹", "「": "」", "『": "』", "＂": "＂", "＇": "＇"}
_BRACKETS = {"(": ")", "[": "]", "{": "}", "（": "）", "［": "］", "【": "】", "〔": "〕",
             "〈": "〉", "《": "》", "⟨": "⟩"}
_OPENERS = {close: {o for o, c in _QUOTES.items() if c == close} for close in _QUOTES.values()}


def _strip_wrapping(answer: str) -> str:
    """Strip punctuation at both ends, enclosing quote or bracket pairs and stray quote marks,
    until none is left: '“(Ada Finch)”.' -> 'Ada Finch', '“Ada Finch.”' -> 'Ada Finch'."""
    while True:
        answer = answer.strip(_TRAILING)
        if not answer:
            return answer
        first, last = answer[0], answer[-1]
        if _encloses(answer):
            answer = answer[1:-1]
        elif first in _QUOTES and _QUOTES[first] not in answer[1:]:
            answer = answer[1:]  # an opening mark never closed
        elif last in _OPENERS and not _OPENERS[last] & set(answer[:-1]):
            answer = answer[:-1]  # a closing mark never opened
        else:
            return answer


def _encloses(text: str) -> bool:
    """Whether ``text`` is wrapped in one quote or bracket pair: the mark opening it is the one
    closing it ('“a” and “b”' and '(a) (b)' are not wrapped)."""
    first = text[0]
    if first in _QUOTES:
        close = _QUOTES[first]
        return len(text) > 1 and text[-1] == close and close not in text[1:-1]
    if first not in _BRACKETS:
        return False
    close, depth = _BRACKETS[first], 0
    for i, ch in enumerate(text):
        depth += (ch == first) - (ch == close)
        if depth == 0:
            return i == len(text) - 1
    return False


def has_answer_marker(text: str) -> bool:
    return _MARKER.search(text) is not None


def last_marker(text: str) -> re.Match[str] | None:
    """The last answer marker in ``text`` (canonical or a variant), or None."""
    matches = list(_MARKER.finditer(text))
    return matches[-1] if matches else None


def parse_answer(text: str) -> str | None:
    """The answer after the last marker (any case, colon optional), with punctuation, quotes
    (typographic ones too) and enclosing brackets removed; None when there is no marker or
    nothing follows it."""
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None
    answer = _strip_wrapping(text[matches[-1].end():].split("\n")[0])
    return answer or None


def final_answer(text: str) -> str:
    """Best-effort answer for scoring: the marked answer, else the last sentence as written."""
    parsed = parse_answer(text)
    if parsed is not None:
        return parsed
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]
    return _strip_wrapping(sentences[-1]) if sentences else ""

"""BM25 tokenisation shared by both backends, so their rankings differ only by implementation."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN

# bm25s sets its own logger to DEBUG on import; keep its per-call chatter out of our logs.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# Same token pattern as bm25s' default splitter: runs of 2+ word characters.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@lru_cache(maxsize=4)
def _stemmer(name: str):  # type: ignore[no-untyped-def]
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(name)


class BM25Tokenizer:
    """lowercase -> word tokens -> stopwords removed -> Snowball stems."""

    def __init__(self, stopwords: str = "en", stemmer: str = "english"):
        self.stopwords = frozenset(STOPWORDS_EN) if stopwords == "en" else frozenset()
        self.stemmer = None if stemmer == "none" else _stemmer(stemmer)

    def __call__(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]

    def tokenize(self, text: str) -> list[str]:
        tokens = [t for t in _TOKEN.findall(text.lower()) if t not in self.stopwords]
        if self.stemmer is not None:
            tokens = self.stemmer.stemWords(tokens)
        return tokens


def passage_text(title: str, text: str) -> str:
    """What gets indexed for a passage: its title matters for multi-hop entity lookups."""
    return f"{title}\n{text}" if title else text


def corpus_texts(titles: Sequence[str], texts: Sequence[str]) -> list[str]:
    return [passage_text(a, b) for a, b in zip(titles, texts, strict=True)]

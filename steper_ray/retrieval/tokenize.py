"""BM25 tokenisation shared by both backends (and by index and query), so their rankings differ
only by implementation."""

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
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs.
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
# char_ngram: runs of one unspaced script, or runs of other word characters.
_SCRIPT_RUN = re.compile(f"[{_UNSPACED}]+|[^\\W{_UNSPACED}]+")
# A token this long in an unspaced script is a phrase or a sentence, not a word.
LONG_RUN_CHARS = 4


@lru_cache(maxsize=4)
def _stemmer(name: str):  # type: ignore[no-untyped-def]
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(name)


def char_ngrams(run: str, n: int) -> list[str]:
    """Overlapping n-character pieces of ``run`` (the run itself when it is shorter), as
    Lucene's CJK bigram analyser does for n = 2: "北京大学" -> 北京, 京大, 大学."""
    return [run] if len(run) <= n else [run[i:i + n] for i in range(len(run) - n + 1)]


class BM25Tokenizer:
    """'word': lowercase -> word tokens -> stopwords removed -> Snowball stems.
    'char_ngram': as 'word' for runs of spaced scripts, character n-grams for runs of scripts
    written without spaces (Chinese, Japanese, Thai, ...), whose 'words' would be whole phrases.
    """

    def __init__(self, stopwords: str = "en", stemmer: str = "english", kind: str = "word",
                 ngram_size: int = 2):
        self.stopwords = frozenset(STOPWORDS_EN) if stopwords == "en" else frozenset()
        self.stemmer = None if stemmer == "none" else _stemmer(stemmer)
        self.kind = kind
        self.ngram_size = ngram_size

    def __call__(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]

    def tokenize(self, text: str) -> list[str]:
        if self.kind == "char_ngram":
            return self._tokenize_ngrams(text.lower())
        return self._words(_TOKEN.findall(text.lower()))

    def _words(self, words: list[str]) -> list[str]:
        tokens = [t for t in words if t not in self.stopwords]
        if self.stemmer is not None:
            tokens = self.stemmer.stemWords(tokens)
        return tokens

    def _tokenize_ngrams(self, text: str) -> list[str]:
        words: list[str] = []
        grams: list[str] = []
        for run in _SCRIPT_RUN.findall(text):
            if _UNSPACED_CHAR.match(run):
                grams += char_ngrams(run, self.ngram_size)
            elif len(run) >= 2:  # the word tokenizer's 2+ character rule
                words.append(run)
        return self._words(words) + grams


def long_run_share(tokens: Sequence[list[str]]) -> float:
    """Share of passages (token lists from the 'word' tokenizer) whose text sits mostly in a
    few very long tokens: runs of an unspaced script of LONG_RUN_CHARS or more characters
    hold at least half of their token characters. BM25 matches such a token only when a
    query holds the same whole phrase, so retrieval on them returns near-arbitrary lists."""
    if not tokens:
        return 0.0
    flagged = 0
    for toks in tokens:
        total = sum(len(t) for t in toks)
        long_runs = sum(len(t) for t in toks if len(t) >= LONG_RUN_CHARS
                        and 2 * len(_UNSPACED_CHAR.findall(t)) >= len(t))
        flagged += total > 0 and 2 * long_runs >= total
    return flagged / len(tokens)


def passage_text(title: str, text: str) -> str:
    """What gets indexed for a passage: its title matters for multi-hop entity lookups."""
    return f"{title}\n{text}" if title else text


def corpus_texts(titles: Sequence[str], texts: Sequence[str]) -> list[str]:
    return [passage_text(a, b) for a, b in zip(titles, texts, strict=True)]

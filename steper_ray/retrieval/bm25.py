"""BM25 retrieval: bm25s (default) and rank_bm25 (reference) behind one interface.

Both backends get the same tokens and score with the same formula (Lucene's BM25: idf =
log(1 + (N - df + 0.5) / (df + 0.5)), tf part tf / (tf + k1 (1 - b + b dl / avgdl))), so their
top-k lists agree up to exact ties and float rounding.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from steper_ray.config import BM25Config
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError, UserError
from steper_ray.retrieval.bm25s_jit import cache_compiled_scorer
from steper_ray.retrieval.protocol import Hit
from steper_ray.retrieval.store import (
    PASSAGES,
    PassageTable,
    atomic_index_dir,
    load_passage_table,
    rebuild_hint,
    write_manifest,
)
from steper_ray.retrieval.tokenize import BM25Tokenizer, corpus_texts, long_run_share

log = logging.getLogger(__name__)


def _scorer() -> str:
    """bm25s' numba scorer is ~50x faster than its numpy one at 100k passages; fall back loudly.
    Its compiled code is cached on disk (``bm25s_jit``), so only a machine's first process
    pays the ~10 s compile."""
    try:
        import numba  # noqa: F401
    except ImportError:
        log.warning("numba is not importable: bm25s falls back to its much slower numpy scorer")
        return "numpy"
    cache_compiled_scorer()
    return "numba"


def _check_words(docs: list[list[Any]]) -> None:
    """Raises UserError when no passage kept a token (``docs``: tokens or token ids per passage):
    both libraries fail on an empty vocabulary with a bare error (bm25s: ``max() arg is an empty
    sequence``)."""
    if not any(docs):
        raise UserError("no passage has a word BM25 can index (every text is stopwords, punctuation or "
                        "empty after tokenising); check the corpus's text field, or index.bm25.stopwords")


class _BM25sBackend:
    name = "bm25s"

    def __init__(self, model: Any):
        self.model = model

    @classmethod
    def build(cls, tokens: list[list[str]] | tuple[list[list[int]], dict[str, int]], cfg: BM25Config) -> _BM25sBackend:
        """Index ``tokens``: a token list per passage, or (token ids per passage, vocabulary
        token -> id) as the distributed build streams them; both give the same scores."""
        import bm25s

        _check_words(tokens[0] if isinstance(tokens, tuple) else tokens)  # ids: the vocabulary holds ""
        model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method="lucene", backend=_scorer())
        model.index(tokens, show_progress=False)
        return cls(model)

    def topk(self, queries: list[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.model.scores["num_docs"])
        # A query without tokens (only stopwords) is not sent: bm25s maps it to its "" token,
        # whose id lies past its score matrix (it adds "" to the vocabulary after building the
        # matrix, bm25s 0.3.16), and its numba scorer then reads out of bounds. Its rows stay 0.
        docs = np.zeros((len(queries), k), dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        asked = [i for i, q in enumerate(queries) if q]
        if asked:
            docs[asked], scores[asked] = self.model.retrieve([queries[i] for i in asked], k=k,
                                                             show_progress=False, n_threads=0)
        return docs, scores

    def subset(self, rows: np.ndarray) -> _BM25sBackend:
        """The same index restricted to passages ``rows`` (ascending), renumbered 0..len-1.

        bm25s keeps a token-major sparse matrix of precomputed scores (for each token: the
        documents holding it and idf x tf-part); a shard keeps its documents' entries as they
        are, so its scores are the whole corpus's (global df, N and average length)."""
        s = self.model.scores
        indices, indptr = s["indices"], s["indptr"]
        new_row = np.full(int(s["num_docs"]), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        mapped = new_row[indices]
        keep = mapped >= 0
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        model = copy.copy(self.model)  # same parameters and vocabulary
        model.scores = {"data": s["data"][keep], "indices": mapped[keep].astype(indices.dtype),
                        "indptr": kept_before[indptr].astype(indptr.dtype), "num_docs": len(rows)}
        return _BM25sBackend(model)

    def save(self, root: Path) -> None:
        self.model.save(str(root / "bm25s"))

    @classmethod
    def load(cls, root: Path) -> _BM25sBackend:
        import bm25s

        # mmap: the score matrix stays on disk pages until a query touches it.
        model = bm25s.BM25.load(
            str(root / "bm25s"), mmap=True, show_progress=False, backend=_scorer()
        )
        return cls(model)

    def check(self, num_passages: int) -> str | None:
        """Why the loaded score matrix does not fit together (one pass over the arrays), or
        None: a damaged file of the right size loads, then scores garbage or crashes numba."""
        s = self.model.scores
        data, indices, indptr = s["data"], s["indices"], s["indptr"]
        if s["num_docs"] != num_passages:
            return f"params.index.json says {s['num_docs']} documents, the index has {num_passages}"
        if len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != len(data) or len(indices) != len(data):
            return "the score matrix arrays (data/indices/indptr) do not match in length"
        if len(data) and (np.any(np.diff(indptr) < 0) or indices.min() < 0 or indices.max() >= num_passages
                          or not np.isfinite(data).all()):
            return "the score matrix holds out-of-range positions or non-finite scores"
        return None


class _RankBM25Backend:
    """rank_bm25's BM25Okapi with Lucene's idf, scaled to bm25s' (k1 + 1)-free tf term."""

    name = "rank_bm25"

    def __init__(self, tokens: list[list[str]], cfg: BM25Config):
        from rank_bm25 import BM25Okapi

        class _LuceneOkapi(BM25Okapi):
            def _calc_idf(self, nd: dict[str, int]) -> None:
                self.idf = {
                    w: math.log(1.0 + (self.corpus_size - df + 0.5) / (df + 0.5))
                    for w, df in nd.items()
                }

        self.tokens = tokens
        self.scale = 1.0 / (cfg.k1 + 1.0)
        self.model = _LuceneOkapi(tokens, k1=cfg.k1, b=cfg.b)

    @classmethod
    def build(cls, tokens: list[list[str]], cfg: BM25Config) -> _RankBM25Backend:
        _check_words(tokens)
        return cls(tokens, cfg)

    def topk(self, queries: list[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.model.corpus_size)
        docs, scores = [], []
        for q in queries:
            s = self.model.get_scores(q) * self.scale
            top = np.argpartition(-s, k - 1)[:k]
            top = top[np.lexsort((top, -s[top]))]  # by score, then row: deterministic ties
            docs.append(top)
            scores.append(s[top])
        return np.array(docs), np.array(scores)

    def save(self, root: Path) -> None:
        # rank_bm25 has no file format; keep the tokens and rebuild (cheap next to its queries).
        pq.write_table(pa.table({"tokens": self.tokens}), root / "tokens.parquet")

    @classmethod
    def load(cls, root: Path, cfg: BM25Config) -> _RankBM25Backend:
        tokens = pq.read_table(root / "tokens.parquet").column("tokens").to_pylist()
        return cls(tokens, cfg)


def tokenizer_for(cfg: BM25Config) -> BM25Tokenizer:
    """The tokenizer a BM25 index uses for its passages and its queries alike."""
    return BM25Tokenizer(cfg.stopwords, cfg.stemmer, cfg.tokenizer, cfg.ngram_size)


# Warn when at least this share of passages is mostly very long unspaced-script tokens.
LONG_RUN_WARN_SHARE = 0.2


def unspaced_warning(tokens: list[list[str]], cfg: BM25Config) -> str | None:
    """The index-time warning for text in a script written without spaces, or None."""
    if cfg.tokenizer != "word":
        return None
    share = long_run_share(tokens)
    return unspaced_warning_text(share) if share >= LONG_RUN_WARN_SHARE else None


def unspaced_warning_text(share: float) -> str:
    """The warning for ``share`` (0-1) of passages that are mostly long unspaced-script runs."""
    return (f"{share:.0%} of the passages tokenise into a few very long tokens (runs of a script "
            "written without spaces, such as Chinese or Japanese): BM25 scores them 0 for nearly "
            "every query and returns an arbitrary list. Rebuild with "
            "index.bm25.tokenizer=char_ngram, or use dense retrieval (--kind dense)")


class BM25Retriever:
    """BM25 over a passage table; build, save, load, batched search."""

    def __init__(self, passages: PassageTable, backend: Any, cfg: BM25Config,
                 warnings: list[str] | None = None):
        self.passages = passages
        self.backend = backend
        self.cfg = cfg
        self.tokenizer = tokenizer_for(cfg)
        self.warnings = warnings or []  # found at build time, for the index summary

    def __len__(self) -> int:
        return len(self.passages)

    @classmethod
    def build(cls, passages: list[Passage] | PassageTable, cfg: BM25Config) -> BM25Retriever:
        table = passages if isinstance(passages, PassageTable) else PassageTable.from_passages(passages)
        if len(table) == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        tokens = tokenizer_for(cfg)(corpus_texts(table.titles(), table.texts()))
        warning = unspaced_warning(tokens, cfg)
        if warning:
            log.warning("BM25 index: %s", warning)
        backend_cls = _BM25sBackend if cfg.backend == "bm25s" else _RankBM25Backend
        return cls(table, backend_cls.build(tokens, cfg), cfg, [warning] if warning else [])

    def split(self, rows: list[np.ndarray]) -> list[BM25Retriever]:
        """One retriever per entry of ``rows`` (ascending passage rows), each scoring with this
        index's whole-corpus statistics (``_BM25sBackend.subset``). Raises UserError for the
        rank_bm25 backend, which has no score matrix to split."""
        if not isinstance(self.backend, _BM25sBackend):
            raise UserError("a sharded BM25 index needs index.bm25.backend=bm25s (rank_bm25 is the "
                            "unsharded reference)")
        return [BM25Retriever(self.passages.take(r), self.backend.subset(r), self.cfg, self.warnings)
                for r in rows]

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        docs, scores = self.backend.topk(self.tokenizer(queries), k)
        # Score 0 means no query word is in the passage (Lucene's idf and tf parts are > 0 for a
        # matching word): such rows only fill up k in index order, so they are not hits, as in
        # Lucene. A query with no indexed word gets none.
        return [self.passages.hits(d[s > 0], s[s > 0]) for d, s in zip(docs, scores)]

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        with atomic_index_dir(out) as tmp:
            self.passages.write(tmp / PASSAGES)
            self.backend.save(tmp)
            write_manifest(
                tmp,
                "bm25",
                len(self.passages),
                backend=self.backend.name,
                bm25=self.cfg.model_dump(),
            )
        return out

    @classmethod
    def load(cls, root: Path, manifest: dict[str, Any]) -> BM25Retriever:
        try:
            cfg = BM25Config(**manifest["bm25"])
        except Exception:  # a hand-edited manifest
            raise IndexLoadError(f"{root}/manifest.json has invalid bm25 settings; {rebuild_hint(root)}") from None
        passages = load_passage_table(root, manifest["num_passages"])
        try:
            backend = (
                _BM25sBackend.load(root)
                if cfg.backend == "bm25s"
                else _RankBM25Backend.load(root, cfg)
            )
            problem = backend.check(len(passages)) if isinstance(backend, _BM25sBackend) else None
        except (OSError, ValueError, KeyError, json.JSONDecodeError, pa.ArrowException) as exc:
            raise IndexLoadError(
                f"BM25 index files in {root} cannot be read ({exc.__class__.__name__}: {exc}); "
                f"{rebuild_hint(root)}"
            ) from None
        if problem:
            raise IndexLoadError(f"BM25 index files in {root / 'bm25s'} are corrupt ({problem}); "
                                 f"{rebuild_hint(root)}")
        return cls(passages, backend, cfg)

"""Sharded indexes: one corpus split into N disjoint shards by passage id, searched together.

A passage's shard is ``crc32(id) mod N`` (stable: the same id lands in the same shard whatever
the corpus order). Each shard is a complete index directory of its own (``shard-<i>``), so a
Serve replica group can load one shard only; the top-level manifest (kind ``sharded``) names
them. Scores compare across shards, which is what makes merging the shards' top-k lists give
the unsharded top-k:
- BM25: a shard's score matrix is the unsharded matrix's columns for its passages, so idf,
  document frequencies and the average length are those of the whole corpus (Lucene BM25,
  see ``retrieval.bm25``), not of the shard.
- Dense: every shard's vectors come from the same encoder, scored by inner product.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steper_ray.config import IndexConfig
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError, UserError
from steper_ray.retrieval.protocol import Encoder, Hit, Retriever
from steper_ray.retrieval.store import (
    MANIFEST,
    PassageTable,
    atomic_index_dir,
    rebuild_hint,
    write_manifest,
)

SHARDED = "sharded"


def shard_name(i: int) -> str:
    return f"shard-{i}"


def refuse_lone_shard(path: str | Path) -> None:
    """Raise IndexLoadError when ``path`` is one shard of a sharded index (its parent's manifest
    is a sharded index's and names it): searched alone, it returns the top-k of part of the
    passages with nothing to say so."""
    root = Path(path).resolve()
    try:
        manifest = json.loads((root.parent / MANIFEST).read_text())
        n = int(manifest["num_shards"]) if manifest.get("kind") == SHARDED else 0
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return  # no readable sharded index above it
    if root.name in {shard_name(i) for i in range(n)}:
        raise IndexLoadError(f"{path} is {root.name}, one of the {n} shards of the index {root.parent}: "
                             f"searched alone it returns the top-k of part of the passages; point at {root.parent}")


def shard_of(passage_id: str, shards: int) -> int:
    """The shard (0 .. shards-1) that holds ``passage_id``: crc32 of its UTF-8 bytes mod ``shards``."""
    return zlib.crc32(passage_id.encode("utf-8")) % shards


def shard_rows(ids: Sequence[str], shards: int) -> list[np.ndarray]:
    """Row numbers of each shard's passages, ascending (corpus order kept within a shard).

    Raises UserError when a shard would be empty (more shards than the ids spread over)."""
    owner = np.fromiter((shard_of(i, shards) for i in ids), dtype=np.int64, count=len(ids))
    rows = [np.flatnonzero(owner == s) for s in range(shards)]
    empty = [s for s, r in enumerate(rows) if len(r) == 0]
    if empty:
        raise UserError(f"index.shards={shards} leaves shard(s) {empty} without passages ({len(ids)} passages "
                        "in all); use fewer shards")
    return rows


def merge_topk(per_shard: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The ``k`` best hits of several shards' lists, each already best first.

    Ties in score keep shard order, then each shard's own order, so a merge is deterministic.
    Shards hold disjoint passages, so nothing is deduplicated."""
    keyed = [[(-h.score, s, r, h) for r, h in enumerate(hits)] for s, hits in enumerate(per_shard)]
    return [item[3] for item in heapq.merge(*keyed, key=lambda t: t[:3])][:k]


class ShardedRetriever:
    """N retrievers over disjoint passage sets, answering as one: each query's top-k is the
    merge (``merge_topk``) of every shard's top-k."""

    def __init__(self, shards: list[Any], cfg: IndexConfig):
        self.shards = shards
        self.cfg = cfg
        self.warnings: list[str] = sorted({w for s in shards for w in getattr(s, "warnings", [])})

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        results = [s.search(queries, k) for s in self.shards]
        return [merge_topk([r[q] for r in results], k) for q in range(len(queries))]

    @classmethod
    def build(cls, passages: list[Passage] | PassageTable, cfg: IndexConfig, progress: bool = True
              ) -> ShardedRetriever:
        """Split ``passages`` into ``cfg.shards`` shards (``shard_rows``) and index each.

        BM25 is indexed once over the whole corpus and its score matrix split (global
        statistics); dense encodes once and builds one FAISS index per shard. Raises UserError
        for an empty shard or a per-shard ivfpq too small to train (``check_buildable``)."""
        table = passages if isinstance(passages, PassageTable) else PassageTable.from_passages(passages)
        rows = shard_rows(table.ids(), cfg.shards)
        if cfg.kind == "bm25":
            from steper_ray.retrieval.bm25 import BM25Retriever

            return cls(BM25Retriever.build(table, cfg.bm25).split(rows), cfg)
        from steper_ray.retrieval.dense import DenseRetriever

        return cls(DenseRetriever.build_split(table, cfg.dense, rows, progress=progress), cfg)

    def save(self, out: str | Path) -> Path:
        """Write ``shard-<i>`` index directories, then the top-level manifest (last, as every
        index: its presence marks the whole directory complete)."""
        out = Path(out)
        with atomic_index_dir(out) as tmp:
            for i, shard in enumerate(self.shards):
                shard.save(tmp / shard_name(i))
            write_manifest(tmp, SHARDED, len(self), shard_kind=self.cfg.kind, num_shards=len(self.shards),
                           shard_passages=[len(s) for s in self.shards])
        return out

    @classmethod
    def load(cls, root: Path, manifest: dict[str, Any], encoder: Encoder | None = None) -> ShardedRetriever:
        """Load every shard in this process (generation, evaluation, in-process serving); a Serve
        app instead loads one shard per replica group (``shard_dirs``)."""
        from steper_ray.retrieval import load_index

        shards: list[Retriever] = []
        for path in shard_dirs(root, manifest):
            shard = load_index(path, encoder=encoder, shard=True)
            encoder = getattr(shard, "encoder", encoder)  # one encoder for every dense shard
            shards.append(shard)
        return cls(shards, IndexConfig(kind=manifest["shard_kind"], shards=len(shards)))


def shard_dirs(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """The shard directories a sharded index's manifest names, in shard order.

    Raises IndexLoadError when the manifest's shard fields are missing or do not add up."""
    try:
        n, sizes, kind = int(manifest["num_shards"]), list(manifest["shard_passages"]), manifest["shard_kind"]
    except (KeyError, TypeError, ValueError):
        raise IndexLoadError(f"{root}/manifest.json is corrupt (no valid shard fields); {rebuild_hint(root)}") from None
    if n < 1 or len(sizes) != n or sum(sizes) != manifest["num_passages"] or kind not in ("bm25", "dense"):
        raise IndexLoadError(f"{root}/manifest.json is corrupt (its shard fields do not add up); {rebuild_hint(root)}")
    return [root / shard_name(i) for i in range(n)]

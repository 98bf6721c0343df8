"""Retriever protocol, BM25 and dense engines, and index directories."""

from __future__ import annotations

from pathlib import Path

from steper_ray.config import IndexConfig
from steper_ray.data.records import Passage
from steper_ray.retrieval.protocol import Encoder, Hit, Retriever
from steper_ray.retrieval.store import check_index_dir

__all__ = ["Encoder", "Hit", "Retriever", "build_index", "load_index"]


def build_index(passages: list[Passage], cfg: IndexConfig, progress: bool = True) -> Retriever:
    """An in-memory retriever of ``cfg.kind`` over ``passages`` (split into ``cfg.shards`` shards
    when above 1: ``retrieval.shards``); call ``.save(dir)`` to keep it."""
    if cfg.shards > 1:
        from steper_ray.retrieval.shards import ShardedRetriever

        return ShardedRetriever.build(passages, cfg, progress=progress)
    if cfg.kind == "bm25":
        from steper_ray.retrieval.bm25 import BM25Retriever

        return BM25Retriever.build(passages, cfg.bm25)
    from steper_ray.retrieval.dense import DenseRetriever

    return DenseRetriever.build(passages, cfg.dense, progress=progress)


def load_index(path: str | Path, encoder: Encoder | None = None, shard: bool = False) -> Retriever:
    """Load a saved index; a missing, partial or corrupt one raises IndexLoadError with the fix,
    as does one shard of a sharded index unless ``shard`` (the sharded index's own loader and its
    per-shard retriever deployments load shards)."""
    root = Path(path)
    manifest = check_index_dir(root)
    if not shard:
        from steper_ray.retrieval.shards import refuse_lone_shard

        refuse_lone_shard(root)
    if manifest["kind"] == "sharded":
        from steper_ray.retrieval.shards import ShardedRetriever

        return ShardedRetriever.load(root, manifest, encoder=encoder)
    if manifest["kind"] == "bm25":
        from steper_ray.retrieval.bm25 import BM25Retriever

        return BM25Retriever.load(root, manifest)
    from steper_ray.retrieval.dense import DenseRetriever

    return DenseRetriever.load(root, manifest, encoder=encoder)

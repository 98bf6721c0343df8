"""`steper-ray index`: read a dataset (pooling its paragraphs) or a corpus, build, save."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from steper_ray.config import DatasetSpec, IndexConfig, SteperConfig
from steper_ray.data import extract_corpus, read_corpus, read_dataset
from steper_ray.data.records import BadRecord, Passage
from steper_ray.errors import UserError
from steper_ray.retrieval import build_index
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


def load_passages(cfg: SteperConfig) -> tuple[list[Passage], list[BadRecord], dict[str, Any]]:
    """The corpus named by ``cfg.index`` (dataset paragraphs or a corpus file)."""
    ix = cfg.index
    if ix.corpus:
        corpus = read_corpus(ix.corpus)
        return corpus.passages, corpus.bad, {"corpus": ix.corpus, "read": corpus.summary()}
    if not ix.dataset:
        raise UserError("nothing to index: pass --dataset PATH or --corpus PATH "
                        "(or set index.dataset / index.corpus in the config)")
    result = read_dataset(ix.dataset, ix.format)
    passages = extract_corpus(result.records)
    if not passages:
        raise UserError(f"{ix.dataset}: no paragraphs to index ({result.summary()})")
    return passages, result.bad, {"dataset": ix.dataset, "read": result.summary()}


def build_dev_index(spec: DatasetSpec, index_cfg: IndexConfig, path: Path) -> dict[str, Any]:
    """Index one dev set over its own pooled paragraphs at ``path``; what was read and built."""
    result = read_dataset(spec.path, spec.format, spec.limit, name=spec.name)
    passages = extract_corpus(result.records)
    t0 = time.perf_counter()
    build_index(passages, index_cfg, progress=False).save(path)
    log.info("index %s: %d passages at %s", spec.name, len(passages), path)
    return {**result.summary(), "passages": len(passages), "build_s": round(time.perf_counter() - t0, 3)}


def run_index(cfg: SteperConfig) -> dict[str, Any]:
    out = Path(cfg.index.out or Path(cfg.run_dir) / "index")
    t0 = time.perf_counter()
    passages, bad, source = load_passages(cfg)
    log.info("indexing %d passages (%s) into %s", len(passages), cfg.index.kind, out)
    retriever = build_index(passages, cfg.index)
    build_s = time.perf_counter() - t0
    retriever.save(out)
    summary = {
        "command": "index",
        "out": str(out),
        "kind": cfg.index.kind,
        "backend": cfg.index.bm25.backend if cfg.index.kind == "bm25" else cfg.index.dense.index_type,
        "passages": len(passages),
        "warnings": list(getattr(retriever, "warnings", [])),
        "bad_records": len(bad),
        "bad_examples": [b.to_dict() for b in bad[:5]],
        **source,
        "build_s": round(build_s, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(out, summary)
    return summary

"""The ``scale`` object of `steper-ray bench retrieval --passages N`: every engine (bm25s and the
FAISS types flat, ivf, hnsw, ivfpq) built at N passages, saved, loaded in a fresh process the
way a retriever replica loads it, and searched.

Per engine: ``build_s``, ``peak_rss_mb`` (the build's high-water mark above the RSS before it),
``disk_mb`` (the engine's own files; the passages file, shared by every engine, is
``passages_disk_mb``), ``retriever_rss_mb`` (RSS of a fresh process after ``load_index`` and the
timed queries: what one replica holds, imports and encoder included), ``load_s``, ``qps`` and,
for the approximate FAISS types, ``recall_at_10`` against flat (exact) search.

The corpus is ``synthesize_corpus`` (real passages plus passages of real sentences). Encoding N
passages on a CPU takes hours, so the FAISS figures use synthetic vectors drawn around real
ones: a slice of real passages is encoded (its rate is ``encode_passages_per_s``) and every
other vector is a random mixture of two real vectors plus Gaussian noise, renormalised
(``synthetic_embeddings``). Mixtures keep the clustered shape of text embeddings; i.i.d.
random unit vectors have none, and every approximate index looks worse on them than on text.
Queries are the dev questions, encoded for real; FAISS ``qps`` times the index search on
encoded query vectors (``query_encode_per_s`` is the encoder's own rate). ``real_check`` gives
the same figures on the encoded real passages alone, to compare the synthetic ones with.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from steper_ray.config import DenseConfig, SteperConfig
from steper_ray.data.records import Passage
from steper_ray.retrieval.store import PASSAGES, PassageTable
from steper_ray.retrieval.tokenize import corpus_texts

log = logging.getLogger(__name__)

FAISS_TYPES = ("flat", "ivf", "hnsw", "ivfpq")
K = 10
# Mixture weight of the first real vector and the noise scale (per unit vector): nearest
# neighbours of a mixture are its two sources, as paraphrases sit near each other in MiniLM space.
MIX_LOW, NOISE = 0.5, 0.25


def synthetic_embeddings(real: np.ndarray, size: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """``size`` x dim float32 unit vectors: the ``real`` rows first, then mixtures
    w * a + (1 - w) * b + NOISE * g / sqrt(dim) of two random real rows a, b (w ~ U(MIX_LOW, 1),
    g standard normal), each renormalised. Built in chunks so a million rows need no temporary
    copies of the whole array."""
    m, dim = real.shape
    out = np.empty((size, dim), dtype=np.float32)
    head = min(m, size)
    out[:head] = real[:head]
    rng = np.random.default_rng(seed)
    for start in range(head, size, chunk):
        n = min(chunk, size - start)
        a, b = real[rng.integers(0, m, n)], real[rng.integers(0, m, n)]
        w = rng.uniform(MIX_LOW, 1.0, (n, 1)).astype(np.float32)
        v = w * a + (1 - w) * b + (NOISE / np.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
        out[start:start + n] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def _probe(path: str, queries: list[str], vectors: np.ndarray | None, k: int) -> dict[str, Any]:
    """In a fresh process: load the index as a replica does, search ``queries`` (or, for FAISS,
    the encoded ``vectors`` straight on the index), report RSS, load time, rate and the hits."""
    proc = psutil.Process()
    before = proc.memory_info().rss
    from steper_ray.retrieval import load_index

    t0 = time.perf_counter()
    retriever: Any = load_index(path)
    load_s = time.perf_counter() - t0
    if vectors is None:
        retriever.search(queries[:1], k)  # compiles the numba scorer (cached on disk) outside the timing
        t0 = time.perf_counter()
        hits: list[Any] = [[h.id for h in hs] for hs in retriever.search(queries, k)]
    else:
        retriever.index.search(vectors[:1], k)
        t0 = time.perf_counter()
        hits = retriever.index.search(vectors, k)[1].tolist()
    seconds = time.perf_counter() - t0
    return {"load_s": round(load_s, 2), "qps": round(len(queries) / seconds, 1),
            "retriever_rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "rss_before_load_mb": round(before / 2**20, 1), "hits": hits}


def _probe_fresh(path: Path, queries: list[str], vectors: np.ndarray | None) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_probe, (str(path), queries, vectors, K))


def _disk_mb(root: Path, skip: str | None = None) -> float:
    return round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != skip) / 2**20, 1)


def _recall(approx: list[list[int]], exact: list[list[int]]) -> float:
    return round(sum(len(set(a) & set(e)) for a, e in zip(approx, exact)) / sum(len(e) for e in exact), 4)


def measure_bm25s(table: PassageTable, queries: list[str], cfg: SteperConfig, work: Path) -> dict[str, Any]:
    """bm25s at ``len(table)`` passages: build (tokenise + index), save, load fresh, search."""
    from steper_ray.bench.retrieval import PeakRSS
    from steper_ray.retrieval.bm25 import BM25Retriever

    rss = PeakRSS()
    with rss.measure():
        t0 = time.perf_counter()
        retriever = BM25Retriever.build(table, cfg.index.bm25)
        build_s = time.perf_counter() - t0
    path = retriever.save(work / "bm25s")
    del retriever
    probe = _probe_fresh(path, queries, None)
    probe.pop("hits")
    row = {"build_s": round(build_s, 1), "peak_rss_mb": rss.peak_mb, "disk_mb": _disk_mb(path, skip=PASSAGES), **probe}
    shutil.rmtree(path)
    return row


def measure_faiss(table: PassageTable, emb: np.ndarray, qvecs: np.ndarray, queries: list[str], dense: DenseConfig,
                  encoder: Any, work: Path, types: tuple[str, ...] = FAISS_TYPES) -> dict[str, Any]:
    """Each FAISS type over ``emb`` (row i is passage i of ``table``): build, save as a complete
    dense index, load fresh, search the encoded queries; recall@10 against flat."""
    from steper_ray.bench.retrieval import PeakRSS
    from steper_ray.retrieval.dense import DenseRetriever, build_faiss_index

    rows: dict[str, Any] = {}
    exact: list[list[int]] | None = None
    for kind in (t for t in FAISS_TYPES if t in types):
        cfg = dense.model_copy(update={"index_type": kind})
        rss = PeakRSS()
        with rss.measure():
            t0 = time.perf_counter()
            index = build_faiss_index(emb, cfg)
            build_s = time.perf_counter() - t0
        path = DenseRetriever(table, encoder, index, cfg).save(work / kind)
        del index
        probe = _probe_fresh(path, queries, qvecs)
        hits = probe.pop("hits")
        row = {"build_s": round(build_s, 1), "peak_rss_mb": rss.peak_mb, "disk_mb": _disk_mb(path, skip=PASSAGES),
               **probe}
        if kind == "flat":
            exact = hits
        else:
            assert exact is not None
            row["recall_at_10"] = _recall(hits, exact)
        rows[kind] = row
        shutil.rmtree(path)
        log.info("scale %s over %d vectors: %s", kind, len(emb), row)
    return rows


def run_scale(cfg: SteperConfig, real: list[Passage], questions: list[str], size: int, work: Path,
              dense: bool = True) -> dict[str, Any]:
    """The ``scale`` object (module docstring) at ``size`` passages, built under ``work``."""
    from steper_ray.bench.retrieval import synthesize_corpus

    bcfg = cfg.bench.retrieval
    queries = [questions[i % len(questions)] for i in range(bcfg.num_queries)]
    t0 = time.perf_counter()
    table = PassageTable.from_passages(synthesize_corpus(real, size))
    work.mkdir(parents=True, exist_ok=True)
    table.write(work / PASSAGES)
    scale: dict[str, Any] = {
        "passages": size, "queries": len(queries), "k": K,
        "source": f"synthetic from {len(real)} real dev passages ({time.perf_counter() - t0:.0f} s to make)",
        "passages_disk_mb": round((work / PASSAGES).stat().st_size / 2**20, 1),
    }
    (work / PASSAGES).unlink()
    wanted = set(bcfg.scale_engines)
    types = tuple(t for t in FAISS_TYPES if t in wanted or (t == "flat" and wanted & {"ivf", "hnsw", "ivfpq"}))
    dense = dense and bool(types)
    engines: dict[str, Any] = {}
    if "bm25s" in wanted:
        log.info("scale: bm25s at %d passages", size)
        engines["bm25s"] = measure_bm25s(table, queries, cfg, work)
    if dense:
        from steper_ray.retrieval.dense import SentenceTransformerEncoder

        dcfg = cfg.index.dense
        encoder = SentenceTransformerEncoder(dcfg.model, dcfg.device)
        encoded = real[: bcfg.encode_slice] if bcfg.encode_slice else real
        t0 = time.perf_counter()
        real_emb = encoder.encode(corpus_texts([p.title for p in encoded], [p.text for p in encoded]), dcfg.batch_size)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        qvecs = encoder.encode(queries, dcfg.batch_size)
        scale["dense"] = {
            "model": dcfg.model, "dim": encoder.dim, "encoded_real_passages": len(encoded),
            "encode_passages_per_s": round(len(encoded) / encode_s, 1),
            "query_encode_per_s": round(len(queries) / (time.perf_counter() - t0), 1),
            "vectors": f"{len(encoded)} real, {max(0, size - len(encoded))} synthetic mixtures around them",
            "settings": dcfg.model_dump(include={"nlist", "nprobe", "pq_m", "pq_nbits", "pq_refine", "pq_refine_k",
                                                 "train_sample", "hnsw_m", "ef_construction", "ef_search"}),
        }
        log.info("scale: FAISS types at %d vectors", size)
        engines.update(measure_faiss(table, synthetic_embeddings(real_emb, size), qvecs, queries, dcfg, encoder,
                                     work, types))
        real_table = PassageTable.from_passages(list(encoded))
        check = {"bm25s": measure_bm25s(real_table, queries, cfg, work)} if "bm25s" in wanted else {}
        check.update(measure_faiss(real_table, real_emb, qvecs, queries, dcfg, encoder, work, types))
        scale["real_check"] = {"passages": len(encoded), "engines": check}
    scale["engines"] = engines
    targets: dict[str, Any] = {}
    if "bm25s" in engines:
        bm25 = engines["bm25s"]["retriever_rss_mb"]
        targets.update({"bm25s_retriever_rss_mb": bm25, "bm25s_rss_goal_mb": 2048, "bm25s_met": bm25 < 2048})
    if "ivfpq" in engines:
        pq, flat = engines["ivfpq"], engines["flat"]
        targets.update({"ivfpq_recall_at_10": pq["recall_at_10"], "ivfpq_qps_over_flat": round(pq["qps"] / flat["qps"], 1),
                        "ivfpq_met": pq["recall_at_10"] >= 0.9 and pq["qps"] >= 10 * flat["qps"]})
    scale["targets"] = targets
    return scale

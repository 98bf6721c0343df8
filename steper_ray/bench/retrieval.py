"""`steper-ray bench retrieval`: bm25s against rank_bm25 on the same corpora and queries, dense
encoding and search throughput, and recall of gold paragraphs on each dev sample.

Corpora: each dev sample's pooled paragraphs, then a large synthetic corpus (default 100,000
passages) made from the real ones: the real passages plus new passages whose sentences are
drawn from random real passages, so vocabulary and length follow real text and every gold
paragraph is still present. With ``--passages N`` (``bench.retrieval.scale_passages``) the
summary also holds a ``scale`` object: every engine built, loaded and searched at N passages
(``bench.retrieval_scale``).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from steper_ray.config import BM25Config, DenseConfig, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.data.paths import SAMPLE_DIR
from steper_ray.data.readers import FORMATS, UndetectedFormat
from steper_ray.data.records import Passage, QuestionRecord
from steper_ray.errors import DataError
from steper_ray.evaluate.metrics import mean_recall_at
from steper_ray.retrieval.agreement import topk_agree
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.retrieval.protocol import Retriever
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)

RECALL_AT = (2, 4, 8, 10)
_SENT = re.compile(r"(?<=[.!?])\s+")


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak_mb`` is the high-water mark above start."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.proc = psutil.Process()
        self.base = self.peak = 0

    @contextmanager
    def measure(self) -> Iterator[PeakRSS]:
        self.base = self.peak = self.proc.memory_info().rss
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss)
                stop.wait(self.interval_s)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def find_dev_files(data_dir: str | None) -> dict[str, Path]:
    """The first ``dev*.json*`` file of each bundled dataset's folder under ``data_dir``
    (default the bundled samples), by dataset name. DataError (exit 2) when there is none."""
    root = Path(data_dir) if data_dir else SAMPLE_DIR
    if data_dir and not root.is_dir():
        raise DataError(f"--data-dir {root} is {'not a directory' if root.exists() else 'not there'}; give the "
                        "directory that holds hotpotqa/, musique/ or 2wikimultihopqa/ with dev*.jsonl files in them")
    found = {}
    for name in ("hotpotqa", "musique", "2wikimultihopqa"):
        files = sorted((root / name).glob("dev*.json*"))
        if files:
            found[name] = files[0]
    if not found:
        raise DataError(f"no dev files under --data-dir {root} (expected hotpotqa/dev*.jsonl, musique/dev*.jsonl "
                        "or 2wikimultihopqa/dev*.jsonl)")
    return found


def read_dev(path: Path) -> list[QuestionRecord]:
    """The question records of a dev file ``find_dev_files`` found, its format detected (the
    benchmarks take no --format). DataError naming the file when none can be read."""
    try:
        return read_dataset(path).records
    except UndetectedFormat as err:  # its --format advice is for the commands that take one
        raise DataError(f"{err.reason}; the benchmarks read dev files in the bundled datasets' own formats "
                        f"({', '.join(FORMATS)}), detected from their records") from None


def synthesize_corpus(real: list[Passage], size: int, seed: int = 0) -> list[Passage]:
    """``real`` plus synthetic passages built from real sentences, ``size`` passages in all."""
    rng = random.Random(seed)
    sentences = [s for p in real for s in _SENT.split(p.text) if s.strip()]
    titles = [p.title for p in real]
    lengths = [max(1, len(_SENT.split(p.text))) for p in real]
    out = list(real)
    i = 0
    while len(out) < size:
        n = rng.choice(lengths)
        text = " ".join(rng.choice(sentences) for _ in range(n))
        out.append(Passage.make(f"{rng.choice(titles)} ({i})", text))
        i += 1
    return out[:size]


def _qps(retriever: Retriever, queries: list[str], k: int) -> tuple[float, list[Any]]:
    retriever.search(queries[:2], k)  # steady state: JIT compilation and caches warmed
    t0 = time.perf_counter()
    hits = retriever.search(queries, k)
    return len(queries) / (time.perf_counter() - t0), hits


def _recall(records: list[QuestionRecord], hits: list[list[Any]]) -> dict[str, float | None]:
    recall = mean_recall_at([[h.id for h in hs] for hs in hits], [r.gold_ids for r in records], RECALL_AT)
    return {f"@{k}": round(v, 4) if v is not None else None for k, v in recall.items()}


def bench_bm25_pair(passages: list[Passage], queries: list[str], cfg: BM25Config) -> dict[str, Any]:
    """Build both backends on the same passages, run the same queries, compare."""
    mem = PeakRSS()
    row: dict[str, Any] = {"passages": len(passages), "queries": len(queries)}
    retrievers = {}
    for backend in ("bm25s", "rank_bm25"):
        bcfg = cfg.model_copy(update={"backend": backend})
        with mem.measure():
            t0 = time.perf_counter()
            retrievers[backend] = BM25Retriever.build(passages, bcfg)
            build_s = time.perf_counter() - t0
        qps, hits = _qps(retrievers[backend], queries, 10)
        row[backend] = {"build_s": round(build_s, 3), "build_peak_rss_mb": mem.peak_mb,
                        "queries_per_s": round(qps, 2)}
        row[f"_{backend}_hits"] = hits
        log.info("%s on %d passages: build %.1fs, %.1f q/s", backend, len(passages), build_s, qps)
    a, b = row.pop("_bm25s_hits"), row.pop("_rank_bm25_hits")
    row["speedup"] = round(row["bm25s"]["queries_per_s"] / row["rank_bm25"]["queries_per_s"], 1)
    row["top10_agreement"] = round(sum(topk_agree(x, y) for x, y in zip(a, b)) / len(a), 4)
    row["top10_identical_order"] = round(
        sum([h.id for h in x] == [h.id for h in y] for x, y in zip(a, b)) / len(a), 4
    )
    row["_bm25s_hits"] = a
    return row


def run_retrieval_bench(
    cfg: SteperConfig,
    data_dir: str | None = None,
    out: Path | None = None,
    dense: bool = True,
) -> dict[str, Any]:
    bcfg = cfg.bench.retrieval
    files = find_dev_files(data_dir)
    summary: dict[str, Any] = {
        "benchmark": "retrieval",
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "bm25": cfg.index.bm25.model_dump(),
        "corpora": {},
    }
    all_passages: list[Passage] = []
    all_questions: list[str] = []
    dense_rows: dict[str, Any] = {}
    encoder = None
    for name, path in files.items():
        records = [r for r in read_dev(path) if r.passages and r.answerable]
        passages = extract_corpus(records)
        if not passages:  # each dev file gets its own index: an empty one cannot be built
            raise DataError(f"{path} holds no answerable questions with context paragraphs; give --data-dir "
                            "dev files whose records have their paragraphs")
        all_passages += passages
        queries = [r.question for r in records]
        all_questions += queries
        row = bench_bm25_pair(passages, queries, cfg.index.bm25)
        row["source"] = str(path)
        row["recall_bm25"] = _recall(records, row.pop("_bm25s_hits"))
        if dense:
            from steper_ray.retrieval.dense import DenseRetriever, SentenceTransformerEncoder

            dcfg: DenseConfig = cfg.index.dense
            encoder = encoder or SentenceTransformerEncoder(dcfg.model, dcfg.device)
            t0 = time.perf_counter()
            retriever = DenseRetriever.build(passages, dcfg, encoder=encoder, progress=False)
            enc_s = time.perf_counter() - t0
            qps, hits = _qps(retriever, queries, 10)
            row["recall_dense"] = _recall(records, hits)
            dense_rows[name] = {"passages": len(passages), "encode_passages_per_s": round(len(passages) / enc_s, 1),
                                "search_queries_per_s": round(qps, 1)}
        summary["corpora"][f"{name}_dev"] = row

    # Large synthetic corpus: queries are the real dev questions, cycled to num_queries.
    size = bcfg.large_corpus_size
    big = synthesize_corpus(list({p.id: p for p in all_passages}.values()), size)
    queries = [all_questions[i % len(all_questions)] for i in range(bcfg.num_queries)]
    row = bench_bm25_pair(big, queries, cfg.index.bm25)
    row.pop("_bm25s_hits")
    row["source"] = f"synthetic from {len(all_passages)} real dev passages"
    summary["corpora"][f"synthetic_{size}"] = row
    if dense:
        summary["dense"] = {
            "model": cfg.index.dense.model,
            "index_type": cfg.index.dense.index_type,
            "dim": encoder.dim if encoder else None,
            "per_corpus": dense_rows,
            "encode_passages_per_s": round(
                sum(r["passages"] for r in dense_rows.values())
                / sum(r["passages"] / r["encode_passages_per_s"] for r in dense_rows.values()), 1),
        }
    summary["target"] = {
        "speedup_at_large": row["speedup"],
        "speedup_goal": 100.0,
        "top10_agreement_at_large": row["top10_agreement"],
        "met": row["speedup"] >= 100.0 and row["top10_agreement"] >= 0.99,
    }
    if bcfg.scale_passages:
        from steper_ray.bench.retrieval_scale import run_scale

        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        # the indexes measured (gigabytes at a million passages) go beside the summary, then away
        with tempfile.TemporaryDirectory(prefix="scale-indexes-", dir=out) as work:
            summary["scale"] = run_scale(cfg, list({p.id: p for p in all_passages}.values()), all_questions,
                                         bcfg.scale_passages, Path(work), dense=dense)
    if out is not None:
        write_summary(out, summary)
    return summary

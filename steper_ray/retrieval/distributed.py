"""The distributed index build on Ray Data: a corpus file too big for one process is streamed
into parts, the parts are encoded (dense) or tokenised (BM25) in parallel, and the index is
assembled from the parts' outputs.

Stages, each resumable (a finished part's output is kept; a rerun does only what is missing):
1. read: ``CorpusScan`` streams the file into ``parts/part-<n>.parquet`` of
   ``index.build.part_passages`` passages (the driver; no whole-corpus Python list);
2. encode: an actor pool of ``index.build.encoders`` encoders (one per GPU on a cluster, CPU
   actors here), each loading the encoder once, writes ``emb/part-<n>.npy``; or tokenise: Ray
   tasks write ``tokens/part-<n>.parquet`` with the tokenizer the index queries with;
3. assemble: bm25s is built from the streamed token ids (the driver maps each part's tokens to
   ids; token strings are never held for the whole corpus), or the FAISS index from the parts'
   vectors, split into shards as ``index.shards`` says, and saved like any index.

The work directory is a hidden sibling of the index (``work_dir``), on the same storage: on a
cluster that must be storage every node sees (the index's own path already is). It is removed
once the index is saved. A changed corpus file or changed settings start the work over.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from steper_ray.atomic_dir import refuse_foreign
from steper_ray.config import IndexConfig
from steper_ray.data import CorpusScan
from steper_ray.data.paths import resolve_data_path
from steper_ray.errors import DataError, ResumableInterrupt, UserError
from steper_ray.progress import progress
from steper_ray.retrieval.protocol import Retriever
from steper_ray.retrieval.store import PassageTable
from steper_ray.retrieval.tokenize import corpus_texts

log = logging.getLogger(__name__)

WORK_FILE = "work.json"
READ_FILE = "read.json"
_WORK_ENTRIES = frozenset({WORK_FILE, READ_FILE, "parts", "emb", "tokens"})


def work_dir(out: Path) -> Path:
    """Where the build of the index at ``out`` keeps its parts: ``.<name>.build`` beside it."""
    return Path(out).with_name(f".{Path(out).name}.build")


def index_of_work_dir(path: Path) -> Path | None:
    """The index whose unfinished build ``path`` is the work directory of (``work_dir``'s
    inverse, for a directory holding ``WORK_FILE``), or None."""
    path = Path(path)
    name = path.name
    if not (name.startswith(".") and name.endswith(".build") and (path / WORK_FILE).is_file()):
        return None
    target = path.with_name(name[1:-len(".build")])
    return target if work_dir(target) == path else None


def use_distributed(cfg: IndexConfig, corpus_file: str | None) -> bool:
    """Whether a build of ``corpus_file`` (None: dataset paragraphs, always in process) runs on
    Ray Data: ``index.distributed`` true, or 'auto' and the file is at least
    ``index.build.auto_min_mb`` (and BM25 on the bm25s backend)."""
    if corpus_file is None or cfg.distributed is False:
        return False
    if cfg.kind == "bm25" and cfg.bm25.backend != "bm25s":
        return False  # 'auto' only: true with rank_bm25 is a config error
    if cfg.distributed is True:
        return True
    return resolve_data_path(corpus_file, "corpus file").stat().st_size >= cfg.build.auto_min_mb * 2**20


def _part_name(n: int) -> str:
    return f"part-{n:05d}"


def _fingerprint(corpus: Path, cfg: IndexConfig) -> dict[str, Any]:
    """What the parts' outputs depend on: the file as it is now and the settings that shape them."""
    stat = corpus.stat()
    engine = cfg.dense.model if cfg.kind == "dense" else cfg.bm25.model_dump()
    return {"corpus": str(corpus.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "part_passages": cfg.build.part_passages, "kind": cfg.kind, "engine": engine}


def _prepare_work(work: Path, fingerprint: dict[str, Any]) -> str | None:
    """Keep ``work`` when it was made for ``fingerprint`` (resume), else empty it; why earlier
    parts were dropped (None: nothing dropped). Raises UserError (nothing changed) when it holds
    data that is not a build's."""
    refuse_foreign(work, lambda name: name in _WORK_ENTRIES, "an index build's parts")
    try:
        before = json.loads((work / WORK_FILE).read_text())
    except (OSError, ValueError):
        before = None
    if before == fingerprint:
        return None
    dropped = None
    if work.exists():
        changed = sorted(k for k in fingerprint if not isinstance(before, dict) or before.get(k) != fingerprint[k])
        dropped = (f"the earlier build's parts in {work} were made for another corpus file or other settings "
                   f"({', '.join(changed)} changed); started over")
        log.warning("%s", dropped)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_FILE).write_text(json.dumps(fingerprint, indent=2))
    return dropped


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename onto ``path``: a part's output is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # the exact name: np.save would add ".npy" to the temporary one
        np.save(f, array)


def read_parts(corpus: str, cfg: IndexConfig, work: Path) -> dict[str, Any]:
    """Stream ``corpus`` into ``work/parts`` (stage 1); the reader's summary. A finished read
    (``read.json``) is reused. Raises DataError as ``CorpusScan`` does."""
    done = work / READ_FILE
    if done.is_file():
        return json.loads(done.read_text())
    parts = work / "parts"
    shutil.rmtree(parts, ignore_errors=True)  # an interrupted read starts over: it is the cheap stage
    parts.mkdir()
    scan = CorpusScan(corpus)
    bar = progress()
    bar.start(None, "passages read")
    batch: dict[str, list[str]] = {"id": [], "title": [], "text": []}
    n = 0

    def flush() -> None:
        nonlocal n, batch
        table = pa.table(batch)
        _atomic_write(parts / f"{_part_name(n)}.parquet", lambda tmp: pq.write_table(table, tmp))
        n, batch = n + 1, {"id": [], "title": [], "text": []}

    for passage in scan.passages():
        batch["id"].append(passage.id)
        batch["title"].append(passage.title)
        batch["text"].append(passage.text)
        if len(batch["id"]) == cfg.build.part_passages:
            flush()
            bar.update(scan.count)
    if batch["id"]:
        flush()
    bar.update(scan.count)
    summary = {**scan.summary(), "parts": n, "bad_examples": [b.to_dict() for b in scan.bad[:5]]}
    done.write_text(json.dumps(summary, indent=2))
    return summary


class EncodePart:
    """Ray Data actor: loads the encoder once; each call encodes the parts named in the batch
    (column ``part``: parquet paths) into ``emb/<part>.npy`` (n x dim float32, normalised)."""

    def __init__(self, dense: dict[str, Any], out_dir: str, threads: int):
        import torch

        from steper_ray.config import DenseConfig
        from steper_ray.retrieval.dense import SentenceTransformerEncoder

        torch.set_num_threads(threads)  # an actor uses the CPUs it reserved, not the whole node
        self.cfg = DenseConfig(**dense)
        self.encoder = SentenceTransformerEncoder(self.cfg.model, self.cfg.device)
        # one short batch before the pool hands out parts: torch's first-call set-up happens
        # while the other actors still load, not inside the first part
        self.encoder.encode(["warm-up"], 1)
        self.out_dir = Path(out_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, start, end, cpu = [], [], [], []
        for part in batch["part"]:
            table = pq.read_table(str(part), columns=["title", "text"])
            t0, c0 = time.time(), time.process_time()
            emb = self.encoder.encode(corpus_texts(table.column("title").to_pylist(),
                                                   table.column("text").to_pylist()), self.cfg.batch_size)
            start.append(t0)
            end.append(time.time())
            cpu.append(time.process_time() - c0)
            target = self.out_dir / f"{Path(str(part)).stem}.npy"
            _atomic_write(target, lambda tmp, emb=emb: _save_npy(tmp, emb))
            rows.append(len(emb))
        return {"part": batch["part"], "rows": np.array(rows), "start": np.array(start), "end": np.array(end),
                "actor": np.array([os.getpid()] * len(rows)), "cpu": np.array(cpu)}


def tokenize_part(batch: dict[str, np.ndarray], bm25: dict[str, Any], out_dir: str) -> dict[str, np.ndarray]:
    """Ray Data task: tokenise the parts named in the batch with the index's tokenizer into
    ``tokens/<part>.parquet`` (one list of tokens per passage); rows per part."""
    from steper_ray.config import BM25Config
    from steper_ray.retrieval.bm25 import tokenizer_for

    tokenizer = tokenizer_for(BM25Config(**bm25))
    rows = []
    for part in batch["part"]:
        table = pq.read_table(str(part), columns=["title", "text"])
        tokens = tokenizer(corpus_texts(table.column("title").to_pylist(), table.column("text").to_pylist()))
        target = Path(out_dir) / f"{Path(str(part)).stem}.parquet"
        _atomic_write(target, lambda tmp, t=tokens: pq.write_table(pa.table({"tokens": t}), tmp))
        rows.append(len(tokens))
    return {"part": batch["part"], "rows": np.array(rows)}


def _run_parts(work: Path, out_name: str, suffix: str, unit: str, cfg: IndexConfig) -> dict[str, Any]:
    """Stage 2 over every part without an output in ``work/out_name``; what ran and when."""
    import ray

    from steper_ray.ray_session import check_fits, ensure_ray

    out_dir = work / out_name
    out_dir.mkdir(exist_ok=True)
    parts = sorted((work / "parts").glob("part-*.parquet"))
    todo = [p for p in parts if not (out_dir / f"{p.stem}{suffix}").is_file()]
    rows_of = {p: pq.read_metadata(p).num_rows for p in parts}
    total, done = sum(rows_of.values()), sum(rows_of[p] for p in parts if p not in todo)
    bar = progress()
    bar.start(total, unit, done)
    out: dict[str, Any] = {"parts": len(parts), "parts_resumed": len(parts) - len(todo), "rows": [],
                           "start": [], "end": [], "actor": [], "cpu": []}
    if not todo:
        return out
    ensure_ray()
    b = cfg.build
    if cfg.kind == "dense":
        check_fits("an index encoder", b.encoder_num_cpus, b.encoder_num_gpus,
                   "index.build.encoder_num_cpus / index.build.encoder_num_gpus")
    ds = ray.data.from_items([{"part": str(p)} for p in todo], override_num_blocks=len(todo))
    if cfg.kind == "dense":
        ds = ds.map_batches(
            EncodePart,
            fn_constructor_kwargs={"dense": cfg.dense.model_dump(), "out_dir": str(out_dir),
                                   "threads": max(1, int(b.encoder_num_cpus))},
            batch_size=1,
            # one part queued per actor: a free actor takes the next part, so none idles at the end
            compute=ray.data.ActorPoolStrategy(size=min(b.encoders, len(todo)), max_tasks_in_flight_per_actor=1),
            num_cpus=b.encoder_num_cpus,
            **({"num_gpus": b.encoder_num_gpus} if b.encoder_num_gpus else {}),
        )
    else:
        ds = ds.map_batches(tokenize_part, fn_kwargs={"bm25": cfg.bm25.model_dump(), "out_dir": str(out_dir)},
                            batch_size=1, num_cpus=1, concurrency=min(b.tokenizers, len(todo)))
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        bar.advance(int(batch["rows"].sum()))
        out["rows"] += batch["rows"].tolist()
        out["start"] += batch.get("start", np.zeros(0)).tolist()
        out["end"] += batch.get("end", np.zeros(0)).tolist()
        out["actor"] += batch.get("actor", np.zeros(0)).tolist()
        out["cpu"] += batch.get("cpu", np.zeros(0)).tolist()
    return out


def _passage_table(work: Path) -> PassageTable:
    parts = sorted((work / "parts").glob("part-*.parquet"))
    return PassageTable(pa.concat_tables([pq.read_table(p) for p in parts]))


def _assemble_bm25(work: Path, table: PassageTable, cfg: IndexConfig) -> Any:
    """bm25s from the parts' token lists: each part's tokens are mapped to ids and dropped, so
    the driver holds ids (8 bytes per token), never the corpus's token strings. The unspaced-
    script warning is judged part by part on the same tokens (``unspaced_warning``)."""
    from steper_ray.retrieval.bm25 import (
        LONG_RUN_WARN_SHARE,
        BM25Retriever,
        _BM25sBackend,
        unspaced_warning_text,
    )
    from steper_ray.retrieval.tokenize import long_run_share

    vocab: dict[str, int] = {"": 0}  # bm25s' empty token: an all-unknown query scores 0 everywhere
    ids: list[list[int]] = []
    flagged = 0.0
    for part in sorted((work / "tokens").glob("part-*.parquet")):
        docs = pq.read_table(part).column("tokens").to_pylist()
        if cfg.bm25.tokenizer == "word":
            flagged += long_run_share(docs) * len(docs)
        ids.extend([vocab.setdefault(t, len(vocab)) for t in doc] for doc in docs)
    warnings = []
    if flagged / max(len(ids), 1) >= LONG_RUN_WARN_SHARE:
        warnings.append(unspaced_warning_text(flagged / len(ids)))
        log.warning("BM25 index: %s", warnings[0])
    return BM25Retriever(table, _BM25sBackend.build((ids, vocab), cfg.bm25), cfg.bm25, warnings)


def assemble_dense(work: Path, table: PassageTable, cfg: IndexConfig, encoder: Any,
                   groups: list[np.ndarray] | None = None) -> Any:
    """FAISS from the parts' vectors (``work/emb/part-*.npy``, rows in ``table`` order), memory-
    mapped and added part by part, one index per shard (``groups``: each shard's rows, as
    ``shard_rows`` gives them; None: unsharded). The driver never holds the corpus's vectors as one array, so for ivf, ivfpq and
    hnsw it needs little beyond the index itself. Each index is trained on the same seeded
    sample of its rows as the in-process build (``sample_rows``), so both build the same index."""
    from steper_ray.retrieval.dense import (
        DenseRetriever,
        empty_faiss_index,
        sample_rows,
    )

    parts = [np.load(p, mmap_mode="r") for p in sorted((work / "emb").glob("part-*.npy"))]
    bounds = np.cumsum([0] + [len(p) for p in parts])

    def in_part(rows: np.ndarray, i: int) -> np.ndarray:
        return rows[(rows >= bounds[i]) & (rows < bounds[i + 1])] - bounds[i]

    def vectors(rows: np.ndarray) -> np.ndarray:  # rows ascending
        return np.concatenate([parts[i][in_part(rows, i)] for i in range(len(parts))])

    def index_of(rows: np.ndarray) -> Any:
        index = empty_faiss_index(len(rows), encoder.dim, cfg.dense,
                                  lambda size: vectors(rows[sample_rows(len(rows), size)]))
        for i, part in enumerate(parts):
            index.add(np.ascontiguousarray(part[in_part(rows, i)], dtype=np.float32))
        return index

    if not groups:
        return DenseRetriever(table, encoder, index_of(np.arange(len(table))), cfg.dense)
    from steper_ray.retrieval.shards import ShardedRetriever

    return ShardedRetriever([DenseRetriever(table.take(r), encoder, index_of(r), cfg.dense) for r in groups], cfg)


def _per_encoder(ran: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Each encoder actor's passages, busy window (seconds from the first part's start),
    passages/s and CPU share (its CPU seconds over its encoding wall seconds: below its threads,
    it waited for a CPU) from ``_run_parts``'s per-part spans."""
    origin = min(ran["start"])
    actors: dict[int, dict[str, float]] = {}
    for actor, rows, start, end, cpu in zip(ran["actor"], ran["rows"], ran["start"], ran["end"], ran["cpu"]):
        a = actors.setdefault(int(actor), {"rows": 0, "first": start, "last": end, "cpu": 0.0, "busy": 0.0})
        a["rows"] += rows
        a["first"], a["last"] = min(a["first"], start), max(a["last"], end)
        a["cpu"] += cpu
        a["busy"] += end - start
    return [{"passages": int(a["rows"]), "first_start_s": round(a["first"] - origin, 2),
             "last_end_s": round(a["last"] - origin, 2),
             "passages_per_s": round(a["rows"] / max(a["last"] - a["first"], 1e-9), 2),
             "cpu_share": round(a["cpu"] / max(a["busy"], 1e-9), 2)} for a in actors.values()]


def build_distributed(corpus: str, cfg: IndexConfig, out: Path) -> tuple[Retriever, dict[str, Any]]:
    """Build the index ``cfg`` names over corpus file ``corpus`` on Ray Data (stages above);
    the retriever (unsaved: the caller saves it to ``out``) and what was read and run.

    Raises DataError for an unreadable corpus, UserError for settings the corpus cannot take
    (an ivfpq too large for it, more shards than passages), both before any encoding."""
    path = resolve_data_path(corpus, "corpus file")
    work = work_dir(out)
    started_over = _prepare_work(work, _fingerprint(path, cfg))
    t0 = time.perf_counter()
    resume = f"the parts done are kept in {work}; rerun the same command to resume"
    try:
        read = read_parts(corpus, cfg, work)
    except DataError:
        shutil.rmtree(work, ignore_errors=True)  # nothing usable was read: leave no empty work behind
        raise
    except KeyboardInterrupt:
        raise ResumableInterrupt(resume) from None
    read_s = time.perf_counter() - t0
    try:  # settings the corpus or the cluster cannot take are refused here, before any encoding
        table = _passage_table(work)
        groups = None
        if cfg.shards > 1:  # an empty shard is refused before any encoding
            from steper_ray.retrieval.shards import shard_rows

            groups = shard_rows(table.ids(), cfg.shards)
        encoder = None
        if cfg.kind == "dense":
            from steper_ray.retrieval.dense import (
                SentenceTransformerEncoder,
                check_buildable,
            )

            encoder = SentenceTransformerEncoder(cfg.dense.model, "cpu")  # the driver only needs its dim and path
            for size in [len(g) for g in groups] if groups else [len(table)]:
                check_buildable(size, encoder.dim, cfg.dense)
        t1 = time.perf_counter()
        ran = _run_parts(work, *(("emb", ".npy", "passages encoded") if cfg.kind == "dense"
                                 else ("tokens", ".parquet", "passages tokenised")), cfg)
    except UserError as exc:
        raise type(exc)(f"{exc} (the {read['passages']} passages read are kept in {work}; the rerun with "
                        "fixed settings starts from them)") from None
    except KeyboardInterrupt:
        raise ResumableInterrupt(resume) from None
    parallel_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    if cfg.kind == "bm25":
        whole = _assemble_bm25(work, table, cfg)
        retriever: Any = whole
        if groups:
            from steper_ray.retrieval.shards import ShardedRetriever

            retriever = ShardedRetriever(whole.split(groups), cfg)
    else:
        retriever = assemble_dense(work, table, cfg, encoder, groups)
    summary = {
        "distributed": True,
        "read": {k: v for k, v in read.items() if k != "bad_examples"},
        "bad_examples": read["bad_examples"],
        "parts": ran["parts"],
        "parts_resumed": ran["parts_resumed"],
        "started_over": started_over,
        "read_s": round(read_s, 3),
        ("encode_s" if cfg.kind == "dense" else "tokenize_s"): round(parallel_s, 3),
        "assemble_s": round(time.perf_counter() - t2, 3),
    }
    if ran["start"]:
        summary["encode_passages_per_s"] = round(sum(ran["rows"]) / max(max(ran["end"]) - min(ran["start"]), 1e-9), 2)
        summary["encoders"] = _per_encoder(ran)
    return retriever, summary


def remove_work(out: Path) -> None:
    """Drop the build's parts once the index at ``out`` is saved."""
    shutil.rmtree(work_dir(out), ignore_errors=True)


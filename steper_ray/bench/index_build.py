"""`steper-ray bench index`: the distributed build's encoder actor pool against single-process
encoders on the same real passages (the distributed-build target of the retrieval-scale work:
``actors`` encoders within 10% of the sum of ``actors`` single-process encoders).

Every side encodes the same parts with one ``encode`` call per part, as the build's actors do.
Each single-process encoder gets the CPUs one actor reserves (``torch.set_num_threads``), and
is timed alone on the machine (the target's sum is ``actors`` times that rate); the same number
of plain processes (no Ray) encoding together gives what the machine itself allows for
concurrent encoders, and plain Ray actors (no Ray Data) split the pool's cost into Ray's own
(its daemons) and Ray Data's (the streaming executor in the driver). The pool's rate is passages
over the window from its first encode start to its last encode end (actor start-up and model
loading are reported apart, as the stage's whole wall time). Passages are the dev sets'
paragraphs (``--data-dir`` as ``bench retrieval``, default the bundled samples), cycled to
``bench.index.passages``.

The machine's speed drifts by more than the target's 10% within minutes (two plain processes at
once made 0.86-1.02 of two alone in four back-to-back rounds on a 2-core EPYC), so the four
sides are measured in turn for ``bench.index.rounds`` rounds, and the round with the median
ratio is reported and checked, as an A/B comparison on a noisy machine is (every round is kept
in the summary).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from steper_ray.bench.retrieval import find_dev_files, read_dev
from steper_ray.config import BenchIndexConfig, SteperConfig
from steper_ray.data import Passage, extract_corpus
from steper_ray.errors import DataError, ResumableInterrupt, UserError
from steper_ray.progress import progress
from steper_ray.retrieval import distributed as dist
from steper_ray.retrieval.tokenize import corpus_texts
from steper_ray.summary import write_summary

TARGET = 0.9


def _encode_parts(encoder: Any, parts: list[list[str]], batch_size: int) -> None:
    """One ``encode`` call per part, as an encoder actor of the distributed build makes them (the
    encoder sorts each call's texts by length, so the call size changes the padding)."""
    for part in parts:
        encoder.encode(part, batch_size)


def _single_rate(parts: list[list[str]], model: str, batch_size: int, threads: int) -> float:
    """Passages/s of one encoder in this process with ``threads`` torch threads (after a warm-up batch)."""
    import torch

    from steper_ray.retrieval.dense import SentenceTransformerEncoder

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder = SentenceTransformerEncoder(model, "cpu")
        encoder.encode(parts[0][:batch_size], batch_size)
        t0 = time.perf_counter()
        _encode_parts(encoder, parts, batch_size)
        return sum(map(len, parts)) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def _encode_in_process(parts: list[list[str]], model: str, batch_size: int, threads: int, ready: Any, go: Any,
                       times: Any) -> None:
    """One plain encoder process of ``_concurrent_rate``: load and warm up, wait for the start, encode."""
    import torch

    from steper_ray.retrieval.dense import SentenceTransformerEncoder

    torch.set_num_threads(threads)
    encoder = SentenceTransformerEncoder(model, "cpu")
    encoder.encode(parts[0][:batch_size], batch_size)
    ready.put(os.getpid())
    go.wait()
    t0, c0 = time.time(), time.process_time()
    _encode_parts(encoder, parts, batch_size)
    times.put((t0, time.time(), time.process_time() - c0))


def _concurrent_rate(parts: list[list[str]], model: str, batch_size: int, threads: int, processes: int
                     ) -> dict[str, Any]:
    """Passages/s of ``processes`` plain encoder processes (no Ray) started together, process i
    encoding parts i, i + processes, ...: from the first start to the last end."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, times, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    slices = [parts[i::processes] for i in range(processes)]
    procs = [ctx.Process(target=_encode_in_process, args=(s, model, batch_size, threads, ready, go, times))
             for s in slices]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=600)
        go.set()
        spans = [times.get(timeout=3600) for _ in procs]
    except BaseException:  # Ctrl-C or a failure: the encoders stop now, not after their share
        for proc in procs:
            proc.kill()
        raise
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    return _rates(sum(map(len, parts)), spans)


def _rates(n: int, spans: list[tuple[float, float, float]]) -> dict[str, Any]:
    """Passages/s of ``n`` passages encoded by workers with (start, end, cpu seconds) spans, and
    each worker's CPU share (CPU seconds over its wall seconds)."""
    return {"passages_per_s": round(n / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans)), 2),
            "cpu_share": [round(c / (e - s), 2) for s, e, c in spans]}


def _ray_actor_rate(parts: list[list[str]], model: str, batch_size: int, num_cpus: float, actors: int) -> dict[str, Any]:
    """As ``_concurrent_rate`` with plain Ray actors (no Ray Data): Ray's own daemons' cost."""
    import ray

    from steper_ray.ray_session import ensure_ray

    ensure_ray()

    @ray.remote(num_cpus=num_cpus)
    class Encoder:
        def __init__(self) -> None:
            import torch

            from steper_ray.retrieval.dense import SentenceTransformerEncoder

            torch.set_num_threads(max(1, int(num_cpus)))
            self.encoder = SentenceTransformerEncoder(model, "cpu")
            self.encoder.encode(parts[0][:batch_size], batch_size)

        def run(self, share: list[list[str]]) -> tuple[float, float, float]:
            t0, c0 = time.time(), time.process_time()
            _encode_parts(self.encoder, share, batch_size)
            return t0, time.time(), time.process_time() - c0

    pool = [Encoder.remote() for _ in range(actors)]  # type: ignore[attr-defined]
    try:
        ray.get([a.__ray_ready__.remote() for a in pool])
        spans = ray.get([a.run.remote(parts[i::actors]) for i, a in enumerate(pool)])
    finally:
        for a in pool:
            ray.kill(a)
    return _rates(sum(map(len, parts)), spans)


def check_fits_machine(b: BenchIndexConfig) -> None:
    """Every side runs ``actors`` encoders at once on this machine (plain processes, Ray actors,
    the pool): UserError when they need more CPUs than it has, instead of Ray waiting forever
    for an actor it cannot place."""
    cpus = os.cpu_count() or 1
    need = b.actors * b.encoder_num_cpus
    if need > cpus:
        raise UserError(f"bench.index.actors x bench.index.encoder_num_cpus = {b.actors} x {b.encoder_num_cpus:g} "
                        f"= {need:g} CPUs, more than this machine's {cpus}; every side of the benchmark runs "
                        "its encoders at once here: lower bench.index.actors or bench.index.encoder_num_cpus")


def dev_paragraphs(data_dir: str | None) -> list[Passage]:
    """The paragraphs of the dev files under ``data_dir`` (``find_dev_files``); DataError when
    they hold none."""
    found = find_dev_files(data_dir)
    paragraphs = [p for path in found.values() for p in extract_corpus(read_dev(path))]
    if not paragraphs:
        raise DataError(f"the dev files under {data_dir or 'the bundled samples'} ({', '.join(map(str, found.values()))}) "
                        "hold no paragraphs to encode; give --data-dir a directory whose dev files have their "
                        "context paragraphs")
    return paragraphs


def _round(parts: list[list[str]], corpus: Path, target: Path, cfg: SteperConfig,
           side_done: Callable[[], None]) -> dict[str, Any]:
    """One round: every side in turn on the same parts (single alone, plain processes, plain Ray
    actors, the build's pool), ``side_done()`` after each; each side's figures and the pool over
    the sum of singles."""
    b = cfg.bench.index
    threads = max(1, int(b.encoder_num_cpus))
    model, batch = cfg.index.dense.model, cfg.index.dense.batch_size
    single = _single_rate(parts, model, batch, threads)
    side_done()
    together = _concurrent_rate(parts, model, batch, threads, b.actors)
    side_done()
    ray_actors = _ray_actor_rate(parts, model, batch, b.encoder_num_cpus, b.actors)
    side_done()
    ix = cfg.index.model_copy(update={
        "kind": "dense", "distributed": True, "shards": 1,
        "build": cfg.index.build.model_copy(update={"part_passages": b.part_passages, "encoders": b.actors,
                                                    "encoder_num_cpus": b.encoder_num_cpus,
                                                    "encoder_num_gpus": 0.0}),
        "dense": cfg.index.dense.model_copy(update={"device": "cpu", "index_type": "flat"})})
    dist.remove_work(target)  # a full measurement, not a resumed one
    _, built = dist.build_distributed(str(corpus), ix, target)
    dist.remove_work(target)
    side_done()
    pool, n = built["encode_passages_per_s"], sum(map(len, parts))
    return {
        "single_process_passages_per_s": round(single, 2),
        "sum_of_single_processes_passages_per_s": round(single * b.actors, 2),
        "actor_pool_passages_per_s": pool,
        "per_actor": built.get("encoders", []),
        "encode_stage_wall_s": built["encode_s"],
        "encode_stage_passages_per_s": round(n / built["encode_s"], 2),
        "plain_processes_concurrent": together,
        "plain_ray_actors_concurrent": ray_actors,
        "ratio": round(pool / (single * b.actors), 3),
        "ratio_to_concurrent_plain_processes": round(pool / together["passages_per_s"], 3),
        "ratio_plain_ray_actors_to_plain_processes": round(ray_actors["passages_per_s"] / together["passages_per_s"], 3),
    }


def run_index_bench(cfg: SteperConfig, out: Path, data_dir: str | None = None) -> dict[str, Any]:
    """Measure ``bench.index.rounds`` rounds and write ``summary.json`` under ``out``; the summary:
    the figures of the round whose ratio is the median (the lower middle one for an even count),
    every round under ``rounds``, and the target checked on that median ratio."""
    b = cfg.bench.index
    check_fits_machine(b)
    real = list({p.id: p for p in dev_paragraphs(data_dir)}.values())
    passages = [real[i % len(real)] for i in range(b.passages)]
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".bench-index-*"):  # a killed run's (SIGKILL): ``out`` is this benchmark's own
        shutil.rmtree(stale, ignore_errors=True)
    # scratch files in a directory of their own: never over a file the user keeps in ``out``
    scratch = Path(tempfile.mkdtemp(prefix=".bench-index-", dir=out))
    bar, sides, t0 = progress(), 4 * b.rounds, time.perf_counter()
    bar.start(sides, "sides measured")
    done = 0

    def side_done(count: int = 1) -> None:
        # the pool's build shows its own read and encode progress: return to the sides' count
        nonlocal done
        done += count
        bar.start(sides, "sides measured", done, since=t0)

    try:  # the scratch goes whatever happens: a rerun starts over, it resumes nothing
        corpus = scratch / "corpus.jsonl"
        with corpus.open("w") as f:
            for i, p in enumerate(passages):  # cycled passages get their own ids: a corpus of b.passages
                f.write(json.dumps({"id": f"{p.id}-{i}", "title": p.title, "text": p.text}) + "\n")
        texts = corpus_texts([p.title for p in passages], [p.text for p in passages])
        parts = [texts[i:i + b.part_passages] for i in range(0, len(texts), b.part_passages)]  # the build's parts
        rounds = [_round(parts, corpus, scratch / "index", cfg, side_done) for _ in range(b.rounds)]
    except ResumableInterrupt:
        raise KeyboardInterrupt from None  # the build's "rerun to resume" is not true of the benchmark
    finally:
        side_done(0)  # an interrupted pool build leaves the sides' count and its start time shown
        shutil.rmtree(scratch, ignore_errors=True)
    median = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
    summary = {
        "benchmark": "index",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "model": cfg.index.dense.model,
        "passages": len(passages),
        "part_passages": b.part_passages,
        "threads_per_encoder": max(1, int(b.encoder_num_cpus)),
        "actors": b.actors,
        "median_round": rounds.index(median),
        **median,
        "ratio_range": [min(r["ratio"] for r in rounds), max(r["ratio"] for r in rounds)],
        "rounds": rounds,
        "target": {"field": "ratio", "compares": "the pool over the sum of single-process encoders, "
                                                 "the median of the rounds",
                   "ratio": TARGET, "met": median["ratio"] >= TARGET},
    }
    write_summary(out, summary)
    return summary

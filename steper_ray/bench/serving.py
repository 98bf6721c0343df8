"""`steper-ray bench serving`: latency percentiles, requests/s and tokens/s of the HTTP endpoint
at several concurrency levels, against the same loop, engine and questions in-process.

Both sides run closed loops: ``c`` clients, each sending its next question when its last one
was answered, over the same ``max(requests_per_level, 2c)`` questions per level. The two sides
take turns so that a slow drift of the machine (other tenants, clock) falls on both alike:

- at concurrency 1 request by request, in-process first for even questions and HTTP first for
  odd ones; each question's HTTP latency minus its in-process latency is its overhead, and the
  median of those is the per-request p50 overhead the target is checked on;
- above 1 in two halves of the questions: in-process, HTTP, HTTP, in-process (ABBA); each side's
  requests/s is its requests over the wall time of its two halves.

The Serve application is up (idle on the in-process turns) throughout, so both sides share the
cores with the same Ray and Serve processes.

- in-process: ``AnswerService.aanswer`` on one event loop, the index in memory, the engine as
  the reasoner deployment holds it (vLLM's async engine, or transformers behind the batching
  adapter); no Ray, no HTTP;
- HTTP: ``POST /v1/answer`` on the Serve application (ingress -> reasoner -> retriever), the
  reasoner given every core the in-process side had (``reasoner.num_cpus``: the engine's threads).

The endpoint's overhead at each level: the throughput ratio (in-process requests/s over HTTP
requests/s) and the p50 difference (HTTP p50 minus in-process p50, ms); at concurrency 1 also
the median of the per-request differences (summary field ``per_request_p50_overhead_ms``), its
parts (``per_request_p50_overhead_parts``, from ``overhead_parts``: the edge, i.e. HTTP, proxy
and ingress; the loop in the replica; and within the loop retrieval and engine, which the
replica reports in its ``Server-Timing`` header), and the same median with each side's engine
time taken out (``per_request_p50_overhead_outside_engine_ms``, from ``outside_engine_p50_ms``:
the request path without the speed difference of two engine instances, which on a shared 2-core
machine is itself tens of ms). Each is a median of per-question differences, so it may be
negative, and None with fewer than two questions answered on both sides. Targets checked in
the summary, on the totals: throughput ratio at most 1.10 at concurrency >= 4, per-request p50
overhead at most 50 ms at concurrency 1.
Timings go to summary.json; nothing here asserts them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from steper_ray.config import GeneratorConfig, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.models.prompt_format import builder_for
from steper_ray.reasoning.async_loop import LoopStats, as_async_retriever
from steper_ray.retrieval import build_index, load_index
from steper_ray.serve.service import AnswerService
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)

THROUGHPUT_TARGET = 1.10  # in-process / HTTP requests/s at concurrency >= 4
P50_TARGET_MS = 50.0  # median per-request HTTP - in-process latency at concurrency 1 (paired_p50_ms)


class Reply(NamedTuple):
    """One answered question as its side reports it: completion tokens, and in ms the loop's own
    latency (the answer's ``latency_ms``) and its time in retrieval and in the engine, all steps
    (``LoopStats.timing``; over HTTP the ``Server-Timing`` header; None where it lacks them)."""

    tokens: int
    loop_ms: float
    search_ms: float | None
    generate_ms: float | None


# one question -> its Reply, or None if it failed
Ask = Callable[[str], Awaitable[Reply | None]]


def _percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    if len(latencies_ms) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    qs = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {"p50_ms": round(qs[49], 1), "p95_ms": round(qs[94], 1), "p99_ms": round(qs[98], 1)}


@dataclass
class Timed:
    """One side's requests at one level: latency (ms) of each answered question by its index in
    the level's workload as the client saw it, and as the reasoning loop measured itself (the
    answer's ``latency_ms``: inside the replica on the HTTP side) and the loop's time in retrieval
    and in the engine, completion tokens, failed requests and the wall time (s) it ran."""

    latency_ms: dict[int, float] = field(default_factory=dict)
    loop_ms: dict[int, float] = field(default_factory=dict)
    search_ms: dict[int, float] = field(default_factory=dict)
    generate_ms: dict[int, float] = field(default_factory=dict)
    tokens: int = 0
    failed: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        n, wall = len(self.latency_ms), self.wall_s
        return {"requests": n, "failed": self.failed, **_percentiles(list(self.latency_ms.values())),
                "requests_per_s": round(n / wall, 3) if wall else 0.0,
                "tokens_per_s": round(self.tokens / wall, 1) if wall else 0.0, "wall_s": round(wall, 2)}


async def closed_loop(ask: Ask, questions: list[str], concurrency: int, into: Timed, first: int = 0) -> None:
    """``concurrency`` clients over ``questions`` (indexes ``first``, ``first + 1``, ... of the
    level's workload), each asking its next when the last returned; adds to ``into``."""
    pending = list(reversed(list(enumerate(questions, first))))

    async def client() -> None:
        while pending:
            i, q = pending.pop()
            t0 = time.perf_counter()
            got = await ask(q)
            if got is None:
                into.failed += 1
                continue
            into.latency_ms[i] = (time.perf_counter() - t0) * 1000
            into.tokens, into.loop_ms[i] = into.tokens + got.tokens, got.loop_ms
            if got.search_ms is not None and got.generate_ms is not None:
                into.search_ms[i], into.generate_ms[i] = got.search_ms, got.generate_ms

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    into.wall_s += time.perf_counter() - t0


async def interleaved(local: Ask, http: Ask, questions: list[str], concurrency: int) -> tuple[Timed, Timed]:
    """Both sides over ``questions`` at ``concurrency``, taking turns (module docstring):
    request by request at 1 (even questions in-process first, odd ones HTTP first), else in
    halves in-process, HTTP, HTTP, in-process. Returns (in-process, HTTP)."""
    a, b = Timed(), Timed()
    if concurrency == 1:
        for i, q in enumerate(questions):
            for ask, into in ((local, a), (http, b)) if i % 2 == 0 else ((http, b), (local, a)):
                await closed_loop(ask, [q], 1, into, first=i)
        return a, b
    half = len(questions) // 2
    first, second = questions[:half], questions[half:]
    await closed_loop(local, first, concurrency, a)
    await closed_loop(http, first, concurrency, b)
    await closed_loop(http, second, concurrency, b, first=half)
    await closed_loop(local, second, concurrency, a, first=half)
    return a, b


def _outside_engine(t: Timed) -> dict[int, float]:
    """Each question's latency (ms) less its loop's time in the engine."""
    return {i: t.latency_ms[i] - t.generate_ms[i] for i in t.latency_ms.keys() & t.generate_ms.keys()}


def _median_difference(minuend: dict[int, float], subtrahend: dict[int, float]) -> float | None:
    """Median over the questions in both of ``minuend[i] - subtrahend[i]`` (ms); None below two."""
    both = sorted(set(minuend) & set(subtrahend))
    if len(both) < 2:
        return None
    return round(statistics.median(minuend[i] - subtrahend[i] for i in both), 1)


def paired_p50_ms(inproc: Timed, http: Timed) -> float | None:
    """Median over the questions answered on both sides of HTTP latency minus in-process latency
    (ms); None below two such questions."""
    return _median_difference(http.latency_ms, inproc.latency_ms)


def overhead_parts(inproc: Timed, http: Timed) -> dict[str, float | None]:
    """Where the per-request overhead goes, medians over the questions (ms; None below two):
    ``edge``, each HTTP request's client latency minus the loop's own time in the replica (the
    HTTP hop, Serve's proxy, the ingress, its call to the reasoner and the response); ``loop``,
    the loop's own time in the replica minus in-process, and within it ``retrieval`` (the
    retriever deployment's calls against the in-memory search) and ``engine`` (the replica's
    engine against the bench's own: two instances of one engine, same tokens). Medians do not
    add up to the total's median exactly."""
    return {"edge_ms": _median_difference(http.latency_ms, http.loop_ms),
            "loop_ms": _median_difference(http.loop_ms, inproc.loop_ms),
            "retrieval_ms": _median_difference(http.search_ms, inproc.search_ms),
            "engine_ms": _median_difference(http.generate_ms, inproc.generate_ms)}


def outside_engine_p50_ms(inproc: Timed, http: Timed) -> float | None:
    """Median over the questions of the per-request overhead with each side's engine time taken
    out (HTTP latency less its engine time, minus in-process latency less its engine time; ms):
    the request path's cost without the speed difference of two engine instances."""
    return _median_difference(_outside_engine(http), _outside_engine(inproc))


def _in_process_engine(cfg: SteperConfig, gen_cfg: GeneratorConfig, concurrency: int) -> Any:
    """The engine as the reasoner deployment holds it (vLLM's with its statistics exported, as
    the replica exports them: they cost the engine time on every step, which is the engine's
    setting, not the request path's); built inside the event loop it serves."""
    if gen_cfg.kind == "vllm":
        from steper_ray.reasoning.generators.vllm_async import AsyncVLLMGenerator

        return AsyncVLLMGenerator(gen_cfg, metrics=True)
    from steper_ray.reasoning.generators.batching import BatchingGenerator
    from steper_ray.reasoning.generators.factory import build_generator

    return BatchingGenerator(build_generator(gen_cfg), concurrency, cfg.serve.batch_wait_s)


async def _both_sides(cfg: SteperConfig, gen_cfg: GeneratorConfig, index: Path, url: str,
                      workloads: dict[int, list[str]], warm: list[str], max_steps: int, k: int
                      ) -> dict[int, tuple[Timed, Timed]]:
    """Each level on both sides, taking turns (``interleaved``), on one event loop; returns
    (in-process, HTTP) by level.

    The Serve application is already up on both sides' turns, so the in-process side runs
    with the same Ray and Serve processes alive (idle) as the HTTP side: the difference is the
    request path, not whether a Ray cluster shares the cores.
    """
    import httpx

    engine = _in_process_engine(cfg, gen_cfg, max(workloads))
    service = AnswerService(as_async_retriever(load_index(index)), engine, builder_for(gen_cfg, "student"),
                            cfg.reasoning)
    body = {"max_steps": max_steps, "k": k}

    async def ask_local(q: str) -> Reply | None:
        stats = LoopStats()
        answer = await service.aanswer(q, max_steps, k, None, stats)
        t = stats.timing()
        return Reply(int(answer["usage"]["completion_tokens"]), float(answer["latency_ms"]), t["search_ms"],
                     t["generate_ms"])

    limits = httpx.Limits(max_connections=max(workloads), max_keepalive_connections=max(workloads))
    timed: dict[int, tuple[Timed, Timed]] = {}
    try:
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            async def ask_http(q: str) -> Reply | None:
                r = await client.post(f"{url}/v1/answer", json={**body, "question": q})
                if r.status_code != 200:
                    log.warning("HTTP %d: %s", r.status_code, r.text[:300])
                    return None
                answer, t = r.json(), server_timing_ms(r.headers.get("server-timing", ""))
                return Reply(int(answer["usage"]["completion_tokens"]), float(answer["latency_ms"]),
                             t.get("search"), t.get("generate"))

            await interleaved(ask_local, ask_http, warm, 1)
            for c, questions in workloads.items():
                timed[c] = await interleaved(ask_local, ask_http, questions, c)
                log.info("c=%d in-process: %s; HTTP: %s", c, timed[c][0].summary(), timed[c][1].summary())
    finally:
        if gen_cfg.kind == "vllm":
            engine.shutdown()
        else:
            engine.close()
    return timed


def server_timing_ms(header: str) -> dict[str, float]:
    """``Server-Timing`` metrics by name -> duration (ms); metrics without a duration are left out
    (descriptions are assumed to hold no comma, as the API's do)."""
    out = {}
    for metric in header.split(","):
        name, *params = (p.strip() for p in metric.split(";"))
        durations = [float(p[4:]) for p in params if p.startswith("dur=")]
        if name and durations:
            out[name] = durations[0]
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def overhead(concurrency: int, inproc: Timed, http: Timed) -> dict[str, Any]:
    """The endpoint's overhead at one level, and whether it meets this level's target: the
    throughput ratio at concurrency >= 4, the per-request p50 overhead (``paired_p50_ms``) at 1."""
    i, h = inproc.summary(), http.summary()
    ratio = round(i["requests_per_s"] / h["requests_per_s"], 3) if h["requests_per_s"] else None
    p50 = round(h["p50_ms"] - i["p50_ms"], 1) if h["p50_ms"] is not None and i["p50_ms"] is not None else None
    out: dict[str, Any] = {"overhead_ratio": ratio, "p50_overhead_ms": p50}
    target: dict[str, Any] = {}
    if concurrency == 1:
        paired = out["per_request_p50_overhead_ms"] = paired_p50_ms(inproc, http)
        out["per_request_p50_overhead_parts"] = overhead_parts(inproc, http)
        out["per_request_p50_overhead_outside_engine_ms"] = outside_engine_p50_ms(inproc, http)
        if paired is not None:
            target = {"per_request_p50_overhead_ms_max": P50_TARGET_MS, "met": paired <= P50_TARGET_MS}
    elif concurrency >= 4 and ratio is not None:
        target = {"throughput_ratio_max": THROUGHPUT_TARGET, "met": ratio <= THROUGHPUT_TARGET}
    return {**out, "target": target}


def run_serving_bench(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    """Measure both sides at every level of ``bench.serving``; writes and returns the summary.
    A bad ``--model`` or a reasoner larger than this machine is a UserError before anything is
    written (``resolved``, ``check_fits``)."""
    from ray import serve

    from steper_ray.commands.tiny_model import run_tiny_model
    from steper_ray.models.prepare import resolved
    from steper_ray.ray_session import check_fits, ensure_ray
    from steper_ray.serve.app import build_app

    b = cfg.bench.serving
    cores = os.cpu_count() or 1
    reasoner_cpus = float(b.reasoner_cpus or cores)
    gen_cfg = GeneratorConfig(kind=b.engine, model=b.model or str((out / "model").resolve()),
                              max_tokens=b.max_tokens, batch_size=max(b.concurrency), max_model_len=b.max_model_len)
    if b.model:
        gen_cfg = resolved(gen_cfg, "bench.serving.model (--model)")
    ensure_ray()
    check_fits("the benchmark's reasoner replica", reasoner_cpus, 0.0, "bench.serving.reasoner_cpus")
    out.mkdir(parents=True, exist_ok=True)
    if not b.model and not (out / "model" / "config.json").is_file():
        run_tiny_model(cfg, gen_cfg.model)
    model = str(gen_cfg.model)
    spec = cfg.data.dev[0]
    records = read_dataset(spec.path, spec.format, name=spec.name).records
    index = out / "index"
    passages = extract_corpus(records)
    build_index(passages, cfg.index, progress=False).save(index)
    questions = [r.question for r in records]
    workloads = {c: [questions[i % len(questions)] for i in range(max(b.requests_per_level, 2 * c))]
                 for c in b.concurrency}
    warm = questions[-2:]  # one question each way, untimed: first-call set-up on both sides
    k = b.k or cfg.retrieval.k

    # the Serve application on the local Ray (Serve's own proxy if one is running)
    started = not serve.status().proxies
    if started:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    else:
        from ray.serve.context import _get_global_client

        port = int(_get_global_client().get_serve_details()["http_options"]["port"])
    s = cfg.serve
    scfg = cfg.model_copy(update={"serve": s.model_copy(update={
        "index": str(index), "model": gen_cfg, "auth_token_env": None, "batch_max_size": max(b.concurrency),
        # the engine gets the cores the in-process side has; the light deployments reserve none
        "reasoner": s.reasoner.model_copy(update={"num_cpus": reasoner_cpus,
                                                  "max_ongoing_requests": max(64, max(b.concurrency))}),
        "retriever": s.retriever.model_copy(update={"num_cpus": 0.0}),
        "ingress": s.ingress.model_copy(update={"num_cpus": 0.0}),
    })})
    t0 = time.perf_counter()
    serve.run(build_app(scfg), name="bench", route_prefix="/bench")
    app_start_s = time.perf_counter() - t0
    try:
        timed = asyncio.run(_both_sides(cfg, gen_cfg, index, f"http://127.0.0.1:{port}/bench", workloads,
                                               warm, b.max_steps, k))
    finally:
        serve.delete("bench")
        if started:
            serve.shutdown()
    total_s = time.perf_counter() - t0

    levels = [{"concurrency": c, "http": timed[c][1].summary(), "in_process": timed[c][0].summary(),
               **overhead(c, *timed[c])} for c in b.concurrency]
    summary = {
        "command": "bench serving",
        "engine": b.engine,
        "model": model,
        "dataset": spec.name,
        "index_passages": len(passages),
        "max_steps": b.max_steps,
        "k": k,
        "max_tokens": b.max_tokens,
        "requests_per_level": {c: len(w) for c, w in workloads.items()},
        "cores": cores,
        "levels": levels,
        "targets_met": all(lv["target"].get("met", True) for lv in levels),
        "wall_s": {"app_start": round(app_start_s, 1), "total": round(total_s, 1)},
    }
    write_summary(out, summary)
    return summary

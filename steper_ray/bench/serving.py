"""`steper-ray bench serving`: latency percentiles and throughput of the HTTP endpoint at several
concurrency levels, against the same loop called in-process with the same model and index.

HTTP side: closed loop, ``c`` clients each sending its next request when the last one returned;
the Serve reasoner batches the step prompts of concurrent requests. In-process side: the same
questions through StepwiseReasoner in batches of ``c`` (how evaluation runs it), so each
question's latency is its batch's time. Overhead = in-process throughput / HTTP throughput.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from steper_ray.config import GeneratorConfig, SteperConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.retrieval import build_index, load_index
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


def _percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    if len(latencies_ms) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    qs = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {"p50_ms": round(qs[49], 1), "p95_ms": round(qs[94], 1), "p99_ms": round(qs[98], 1)}


async def _http_level(url: str, questions: list[str], concurrency: int, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    failures: dict[int, int] = {}
    pending = list(questions)

    async def client(http: httpx.AsyncClient) -> None:
        while pending:
            q = pending.pop()
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/answer", json={**body, "question": q})
            if r.status_code == 200:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                failures[r.status_code] = failures.get(r.status_code, 0) + 1
                log.warning("HTTP %d: %s", r.status_code, r.text[:300])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"requests": len(latencies), "failed": failures, **_percentiles(latencies),
            "requests_per_s": round(len(latencies) / wall, 2)}


def _inprocess_level(reasoner: StepwiseReasoner, questions: list[str], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    t_all = time.perf_counter()
    for i in range(0, len(questions), concurrency):
        batch = questions[i:i + concurrency]
        t0 = time.perf_counter()
        reasoner.run([Question(str(j), q) for j, q in enumerate(batch)])
        latencies += [(time.perf_counter() - t0) * 1000] * len(batch)
    wall = time.perf_counter() - t_all
    return {"requests": len(latencies), **_percentiles(latencies), "requests_per_s": round(len(latencies) / wall, 2)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_serving_bench(cfg: SteperConfig, out: Path) -> dict[str, Any]:
    from ray import serve

    from steper_ray.commands.tiny_model import run_tiny_model
    from steper_ray.ray_session import ensure_ray
    from steper_ray.serve.app import build_app

    b = cfg.bench.serving
    out.mkdir(parents=True, exist_ok=True)
    from steper_ray.models.prepare import resolve_model

    model = resolve_model(b.model) if b.model else None
    if model is None:
        model = str(out / "model")
        if not (out / "model" / "config.json").is_file():
            run_tiny_model(cfg, model)
    spec = cfg.data.dev[0]
    records = read_dataset(spec.path, spec.format, name=spec.name).records
    index = out / "index"
    passages = extract_corpus(records)
    build_index(passages, cfg.index, progress=False).save(index)
    questions = [r.question for r in records]
    n = b.requests_per_level
    workload = [questions[i % len(questions)] for i in range(n)]
    gen_cfg = GeneratorConfig(kind=b.engine, model=model, max_tokens=b.max_tokens,
                              batch_size=max(b.concurrency))
    k = cfg.retrieval.k

    # in-process: the loop over the same index and engine, no Ray
    reasoner = StepwiseReasoner(load_index(index), build_generator(gen_cfg), max_steps=b.max_steps, k=k,
                                max_passages=cfg.reasoning.max_passages)
    reasoner.run([Question("warm", questions[0])])
    inproc = {}
    for c in b.concurrency:
        inproc[c] = _inprocess_level(reasoner, workload, c)
        log.info("in-process c=%d: %s", c, inproc[c])
    del reasoner

    # over HTTP: the Serve application on the local Ray (Serve's own proxy if one is running)
    ensure_ray()
    started = not serve.status().proxies
    if started:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    else:
        from ray.serve.context import _get_global_client

        port = int(_get_global_client().get_serve_details()["http_options"]["port"])
    scfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={
        "index": str(index), "model": gen_cfg, "auth_token_env": None, "batch_max_size": max(b.concurrency),
    })})
    serve.run(build_app(scfg), name="bench", route_prefix="/bench")
    url = f"http://127.0.0.1:{port}/bench"
    body = {"max_steps": b.max_steps, "k": k}
    try:
        asyncio.run(_http_level(url, questions[:2], 1, body))  # warm-up
        http = {}
        for c in b.concurrency:
            http[c] = asyncio.run(_http_level(url, workload, c, body))
            log.info("http c=%d: %s", c, http[c])
    finally:
        serve.delete("bench")
        if started:
            serve.shutdown()

    levels = []
    for c in b.concurrency:
        h, p = http[c], inproc[c]
        levels.append({"concurrency": c, "http": h, "in_process": p,
                       "overhead_ratio": round(p["requests_per_s"] / h["requests_per_s"], 3) if h["requests_per_s"] else None})
    summary = {
        "command": "bench serving",
        "engine": b.engine,
        "model": model,
        "index_passages": len(passages),
        "max_steps": b.max_steps,
        "k": k,
        "requests_per_level": n,
        "levels": levels,
    }
    write_summary(out, summary)
    return summary

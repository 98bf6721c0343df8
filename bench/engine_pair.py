"""Two instances of one engine, no Ray, no HTTP: how far apart their per-request times are.

`steper-ray bench serving` compares the loop in the reasoner replica against the same loop in
its own process, so the per-request overhead at concurrency 1 holds the speed difference of two
engine instances besides the request path. This script measures that difference alone: the same
loop (AnswerService, BM25 over the bundled HotpotQA dev paragraphs, the serving bench's
engine: vLLM's async engine), the same questions and settings, in this process and in a spawned
plain Python process, taking turns question by question as the serving bench does. It prints
one JSON line: the median over the questions of (child's loop time - this process's loop time)
in ms, both sides' p50, and how many answers were the same on both sides.

    .venv/bin/python bench/engine_pair.py [--model smollm2] [--questions 24]

Needs the model (``smollm2`` is prepared offline on first use) and about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MAX_STEPS, K, MAX_TOKENS = 2, 2, 16  # the settings of the serving bench's SmolLM2 runs


def build(model: str, index: Path) -> tuple[Any, Any]:
    """The loop as the serving bench's in-process side holds it: (AnswerService, engine)."""
    from steper_ray.bench.serving import _in_process_engine
    from steper_ray.config import GeneratorConfig, load_config
    from steper_ray.models.prepare import resolved
    from steper_ray.models.prompt_format import builder_for
    from steper_ray.reasoning.async_loop import as_async_retriever
    from steper_ray.retrieval import load_index
    from steper_ray.serve.service import AnswerService

    cfg = load_config(None)
    gen = resolved(GeneratorConfig(kind="vllm", model=model, max_tokens=MAX_TOKENS, batch_size=1), "--model")
    engine = _in_process_engine(cfg, gen, 1)
    service = AnswerService(as_async_retriever(load_index(index)), engine, builder_for(gen, "student"), cfg.reasoning)
    return service, engine


def child(conn: Connection, model: str, index: Path) -> None:
    """The second instance: answers each question it is sent, replies (loop ms, answer)."""
    service, engine = build(model, index)
    loop = asyncio.new_event_loop()
    conn.send("ready")
    while (question := conn.recv()) is not None:
        answer = loop.run_until_complete(service.aanswer(question, MAX_STEPS, K))
        conn.send((answer["latency_ms"], answer["answer"]))
    engine.shutdown()


async def main(model: str, n: int) -> dict[str, Any]:
    from steper_ray.config import load_config
    from steper_ray.data import extract_corpus, read_dataset
    from steper_ray.retrieval import build_index

    cfg = load_config(None)
    spec = cfg.data.dev[0]
    records = read_dataset(spec.path, spec.format, name=spec.name).records
    questions = [r.question for r in records]
    with tempfile.TemporaryDirectory(prefix="engine-pair-") as scratch:  # the index, removed at the end
        index = Path(scratch) / "index"
        build_index(extract_corpus(records), cfg.index, progress=False).save(index)
        return await _pair(model, index, questions, n)


async def _pair(model: str, index: Path, questions: list[str], n: int) -> dict[str, Any]:
    """Both instances over the first ``n`` of ``questions`` (cycled), taking turns."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no engine state shared with this one
    here, there = ctx.Pipe()
    proc = ctx.Process(target=child, args=(there, model, index))
    proc.start()
    service, engine = build(model, index)
    assert await asyncio.to_thread(here.recv) == "ready"

    async def ask_here(q: str) -> tuple[float, str]:
        answer = await service.aanswer(q, MAX_STEPS, K)
        return answer["latency_ms"], answer["answer"]

    async def ask_there(q: str) -> tuple[float, str]:
        here.send(q)
        return await asyncio.to_thread(here.recv)

    for q in questions[-2:]:  # untimed: first-call set-up on both sides
        await ask_here(q)
        await ask_there(q)
    a: dict[int, tuple[float, str]] = {}
    b: dict[int, tuple[float, str]] = {}
    for i in range(n):
        q = questions[i % len(questions)]
        turns = ((ask_here, a), (ask_there, b)) if i % 2 == 0 else ((ask_there, b), (ask_here, a))
        for ask, into in turns:
            into[i] = await ask(q)
    here.send(None)
    proc.join()
    engine.shutdown()
    return {"questions": n, "same_answers": sum(a[i][1] == b[i][1] for i in range(n)),
            "median_child_minus_parent_ms": round(statistics.median(b[i][0] - a[i][0] for i in range(n)), 1),
            "parent_p50_ms": round(statistics.median(v[0] for v in a.values()), 1),
            "child_p50_ms": round(statistics.median(v[0] for v in b.values()), 1)}


MAX_QUESTIONS = 10_000  # about 12 hours of SmolLM2 on 2 cores


def questions_arg(text: str) -> int:
    """--questions: a whole number from 2 (a median needs pairs) to MAX_QUESTIONS."""
    n = int(text) if text.strip().isascii() and text.strip().lstrip("-").isdigit() else 0
    if not 2 <= n <= MAX_QUESTIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a whole number from 2 (a median needs pairs) to {MAX_QUESTIONS:,}")
    return n


if __name__ == "__main__":
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout holds only the JSON line
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2", help="a model directory or smollm2")
    p.add_argument("--questions", type=questions_arg, default=24, help="questions asked on each side (2 to 10,000)")
    args = p.parse_args()
    from steper_ray.config import GeneratorConfig
    from steper_ray.errors import UserError
    from steper_ray.models.prepare import resolved

    try:  # a bad --model is told before any engine starts
        if not args.model.strip():
            raise UserError("--model is blank; give a model directory or smollm2")
        resolved(GeneratorConfig(kind="vllm", model=args.model), "--model")
    except UserError as exc:
        print(f"engine_pair: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(asyncio.run(main(args.model, args.questions))))

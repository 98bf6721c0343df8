"""`steper-ray tiny-model`: an offline tiny Llama whose tokenizer is trained on local text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from steper_ray.config import SteperConfig
from steper_ray.data import extract_corpus, read_corpus, read_dataset
from steper_ray.layout import RunLayout


def tokenizer_texts(cfg: SteperConfig, dataset: str | None = None, corpus: str | None = None) -> list[str]:
    """Text to train the tokenizer on: questions, answers and paragraphs, so prompts tokenise
    into few tokens. Default: every dataset in the config (the bundled samples)."""
    if corpus:
        return [f"{p.title}\n{p.text}" for p in read_corpus(corpus).passages]
    specs = [dataset] if dataset else [s.path for s in (*cfg.data.train, *cfg.data.dev)]
    texts: list[str] = []
    for path in specs:
        records = read_dataset(path).records
        texts += [f"{r.question}\n{r.answers[0]}" for r in records]
        texts += [f"{p.title}\n{p.text}" for p in extract_corpus(records)]
    return texts


def run_tiny_model(cfg: SteperConfig, out: str | Path, dataset: str | None = None,
                   corpus: str | None = None) -> dict[str, Any]:
    from steper_ray.models.tiny import build_tiny_llama
    from steper_ray.summary import write_summary

    t0 = time.perf_counter()
    texts = tokenizer_texts(cfg, dataset, corpus)
    path = build_tiny_llama(texts, out, cfg.tiny_model, RunLayout(cfg).logs)
    summary = {
        "command": "tiny-model",
        "out": str(path),
        "tokenizer_texts": len(texts),
        "config": cfg.tiny_model.model_dump(),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(path, summary)
    return summary

"""End-of-training artefacts from metrics.jsonl: the sigma / per-task loss plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steper_ray.train.loss import TASKS


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # a resumed run re-logs steps after its checkpoint: keep the last record of each step
    return sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])


def plot_sigmas(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in rows]
    for task in TASKS:
        ax1.plot(steps, [r.get(f"sigma_{task}") for r in rows], label=task)
        pts = [(r["step"], r[f"loss_{task}"]) for r in rows if r.get(f"loss_{task}") is not None]
        if pts:
            ax2.plot(*zip(*pts), label=task)
    ax1.set(title="sigma_j per task", xlabel="optimizer step", ylabel="sigma")
    ax2.set(title="token-mean CE per task", xlabel="optimizer step", ylabel="loss", yscale="log")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

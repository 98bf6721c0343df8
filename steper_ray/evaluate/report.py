"""`steper-ray evaluate --compare RUN_DIR...`: one Markdown table and one bar chart across runs
(teacher vs student vs the vanilla-KD and uniform-weight ablations), from their evaluate summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steper_ray.errors import UserError
from steper_ray.layout import RunLayout

METRICS = ("em", "f1", "acc", "marked", "recall")  # marked: share of answers with the answer marker


def _load_run(path: Path) -> tuple[str, dict[str, Any]]:
    """(label, evaluate summary) of a run directory or of an evaluate directory itself."""
    layout = RunLayout.of_run(path)
    for cand in (layout.evaluate / "summary.json", path / "summary.json"):
        if cand.is_file():
            summary = json.loads(cand.read_text())
            if summary.get("command") == "evaluate":
                break
    else:
        raise UserError(f"{path} has no evaluation results (evaluate/summary.json); run "
                        f"`steper-ray evaluate run_dir={path}` first")
    if cand.parent != layout.evaluate:  # an evaluate directory given itself: its run is above it
        layout = RunLayout.of_run(cand.parent.parent)
    if summary.get("label"):
        return summary["label"], summary
    label = layout.run_dir.name
    train = layout.train / "summary.json"
    model = summary.get("model", {})
    if model.get("kind") == "evidence" or summary.get("prompt") == "teacher":
        label += " (teacher)"
    elif train.is_file():
        label += f" ({json.loads(train.read_text()).get('loss_mode', 'student')})"
    return label, summary


def compare_runs(run_dirs: list[str], out: Path) -> dict[str, Any]:
    if not run_dirs:
        raise UserError("--compare needs at least one run directory")
    runs = [_load_run(Path(p)) for p in run_dirs]
    labels = [label for label, _ in runs]
    if len(set(labels)) < len(labels):  # two runs with the same directory name
        labels = [f"{label} [{i + 1}]" for i, label in enumerate(labels)]
    datasets = sorted({d for _, s in runs for d in s["metrics"]})
    table: dict[str, dict[str, dict[str, Any]]] = {
        label: summary["metrics"] for label, (_, summary) in zip(labels, runs)
    }
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| run | dataset | questions | EM | F1 | Acc | marked | recall | steps | tokens/q |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        for d in datasets:
            m = table[label].get(d)
            if m is None:
                continue
            cells = [f"{m[k]:.3f}" if m.get(k) is not None else "-" for k in METRICS]
            lines.append(f"| {label} | {d} | {m['questions']} | " + " | ".join(cells)
                         + f" | {m['mean_steps']:.2f} | {m['tokens_per_question']:.1f} |")
    # what the indexes held (data.corpus; summaries from before the setting held 'questions')
    corpus = {label: summary.get("corpus", "questions") for label, (_, summary) in zip(labels, runs)}
    lines += ["", "Indexes (data.corpus): " + "; ".join(f"{label}: {c}" for label, c in corpus.items())]
    if len(set(corpus.values())) > 1:
        lines.append("**These runs retrieved from different corpora: their scores are not comparable.**")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    plot_metrics(table, labels, datasets, out / "comparison.png")
    summary = {"command": "evaluate --compare", "out": str(out), "runs": dict(zip(labels, run_dirs)),
               "corpus": corpus, "metrics": table, "report": str(out / "comparison.md"),
               "plot": str(out / "comparison.png")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def plot_metrics(table: dict[str, dict[str, dict[str, Any]]], labels: list[str], datasets: list[str], path: Path,
                 title: str | None = None) -> None:
    """EM, F1 and Acc bars: one group per dataset, one bar per label; ``table[label][dataset]``
    holds the metrics (fractions in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(datasets))
    for ax, metric in zip(axes, ("em", "f1", "acc")):
        for i, label in enumerate(labels):
            vals = [(table[label].get(d) or {}).get(metric) or 0.0 for d in datasets]
            ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=label)
        ax.set(title=metric.upper(), xticks=x, ylim=(0, 1))
        ax.set_xticklabels(datasets, rotation=15)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

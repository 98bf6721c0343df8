"""`steper-ray evaluate --compare RUN_DIR...`: one Markdown table and one bar chart across runs
(teacher vs student vs the vanilla-KD and uniform-weight ablations), from their evaluate summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steper_ray.atomic_dir import own_out_dir
from steper_ray.errors import UserError
from steper_ray.layout import RunLayout
from steper_ray.summary import write_summary

# What a comparison directory holds: a rerun replaces these and nothing else.
COMPARE_ENTRIES = frozenset({"summary.json", "summary.json.tmp", "comparison.md", "comparison.png"})
METRICS = ("em", "f1", "acc", "marked", "recall")  # marked: share of answers with the answer marker


def _load_run(path: Path) -> tuple[str, dict[str, Any]]:
    """(label, evaluate summary) of a run directory or of an evaluate directory itself."""
    if not path.is_dir():
        raise UserError(f"{path} {'is a file' if path.exists() else 'does not exist'}; --compare takes run "
                        "directories (or their evaluate/ directories)")
    layout = RunLayout.of_run(path)
    for cand in (layout.evaluate / "summary.json", path / "summary.json"):
        if cand.is_file():
            summary = _summary(cand)
            if summary.get("command") == "evaluate":
                break
    else:
        raise UserError(f"{path} has no evaluation results (evaluate/summary.json); run "
                        f"`steper-ray evaluate run_dir={path}` first")
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(m, dict) for m in metrics.values()):
        raise UserError(f"{cand} has no per-dataset 'metrics' mapping: it is not a summary `steper-ray "
                        "evaluate` wrote; evaluate that run again")
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
        label += f" ({_summary(train).get('loss_mode', 'student')})"
    return label, summary


def _summary(path: Path) -> dict[str, Any]:
    """The JSON object at ``path``. Raises UserError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} does not read as JSON ({exc}); evaluate that run again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a JSON {type(data).__name__}, not a summary object; evaluate that run again")
    return data


def _number(value: Any, digits: int) -> str:
    """A metric cell: the number, or "-" when it is missing or not a number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.{digits}f}" if ok else "-"


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
    own_out_dir(out, lambda name: name in COMPARE_ENTRIES, "a comparison's results")
    lines = ["| run | dataset | questions | EM | F1 | Acc | marked | recall | steps | tokens/q |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        for d in datasets:
            m = table[label].get(d)
            if m is None:
                continue
            cells = [_number(m.get(k), 3) for k in METRICS]
            lines.append(f"| {label} | {d} | {m.get('questions', '-')} | " + " | ".join(cells)
                         + f" | {_number(m.get('mean_steps'), 2)} | {_number(m.get('tokens_per_question'), 1)} |")
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
    write_summary(out, summary)
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
            vals = [(table[label].get(d) or {}).get(metric) for d in datasets]
            vals = [v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0 for v in vals]
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

"""`steper-ray evaluate --compare RUN_DIR...`: one Markdown table and one bar chart across runs
(teacher vs student vs the vanilla-KD and uniform-weight ablations), from their evaluate summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steper_ray.atomic_dir import own_out_dir
from steper_ray.errors import UserError
from steper_ray.layout import RunLayout
from steper_ray.summary import json_type, read_summary, summary_command, write_summary

# What a comparison directory holds: a rerun replaces these and nothing else.
COMPARE_ENTRIES = {name: "file" for name in ("summary.json", "summary.json.tmp", "comparison.md", "comparison.png")}
METRICS = ("em", "f1", "acc", "marked", "recall")  # marked: share of answers with the answer marker


def evaluate_summary_problem(data: dict[str, Any]) -> str | None:
    """What makes ``data`` (an evaluate summary.json) unusable for a comparison or an ablation
    table, or None: per-dataset metrics that are not objects of numbers, or a model, label or
    corpus of another JSON type than the one `steper-ray evaluate` writes."""
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        return f"has no per-dataset 'metrics' object (a JSON {json_type(metrics)})"
    for dataset, m in metrics.items():
        if not isinstance(m, dict):
            return f"holds metrics for {dataset!r} that are a JSON {json_type(m)}, not an object"
        odd = sorted(k for k, v in m.items() if v is not None and json_type(v) != "number")
        if odd:
            return f"holds {dataset!r} metrics that are not numbers: {', '.join(odd)}"
    for key, kind in (("model", "object"), ("label", "string"), ("corpus", "string")):
        if data.get(key) is not None and json_type(data[key]) != kind:
            return f"holds a {key!r} that is a JSON {json_type(data[key])}, not a {kind}"
    return None


def _load_run(path: Path) -> tuple[str, dict[str, Any]]:
    """(label, evaluate summary) of a run directory or of an evaluate directory itself."""
    if not path.is_dir():
        raise UserError(f"{path} {'is a file' if path.exists() else 'does not exist'}; --compare takes run "
                        "directories (or their evaluate/ directories)")
    layout = RunLayout.of_run(path)
    found = [c for c in (layout.evaluate / "summary.json", path / "summary.json") if c.is_file()]
    for cand in found:
        try:
            summary = read_summary(cand)
        except ValueError as exc:
            raise UserError(f"{cand} {exc}; evaluate that run again") from None
        if summary.get("command") == "evaluate":
            break
    else:
        named = (f" ({', '.join(map(str, found))}: not written by `steper-ray evaluate`)" if found else "")
        raise UserError(f"{path} has no evaluation results (evaluate/summary.json){named}; run "
                        f"`steper-ray evaluate run_dir={path}` first, or pass an evaluated run (for an "
                        "ablation, one of its mode directories)")
    problem = evaluate_summary_problem(summary)
    if problem:
        raise UserError(f"{cand} {problem}: it is not a summary `steper-ray evaluate` wrote; evaluate that run again")
    if cand.parent != layout.evaluate:  # an evaluate directory given itself: its run is above it
        layout = RunLayout.of_run(cand.parent.parent)
    if summary.get("label"):
        return summary["label"], summary
    label = layout.run_dir.name
    train = layout.train / "summary.json"
    model = summary.get("model") or {}
    if model.get("kind") == "evidence" or summary.get("prompt") == "teacher":
        label += " (teacher)"
    elif train.is_file():
        try:
            mode = read_summary(train).get("loss_mode")
        except ValueError:
            mode = None  # only the label is read from it; the metrics are the evaluate summary's
        label += f" ({mode if isinstance(mode, str) else 'student'})"
    return label, summary


def _number(value: Any, digits: int) -> str:
    """A metric cell: the number, or "-" when it is missing or not a number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.{digits}f}" if ok else "-"


def compare_runs(run_dirs: list[str], out: Path, logs: Path | None = None) -> dict[str, Any]:
    """The comparison table and chart of evaluated runs into ``out`` (``own_out_dir``; ``logs``:
    the command's log directory, which ``out`` must not hold)."""
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
    own_out_dir(out, COMPARE_ENTRIES, "the results of a comparison",
                lambda d: summary_command(d) == "evaluate --compare", logs)
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
                 title: str | None = None, percent: bool = False) -> None:
    """EM, F1 and Acc bars: one group per dataset, one bar per label; ``table[label][dataset]``
    holds the metrics (fractions in [0, 1]). ``percent``: bars and axis in percent, as the
    ablation's table next to the chart gives them (the comparison's table gives fractions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scale = 100.0 if percent else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(datasets))
    for ax, metric in zip(axes, ("em", "f1", "acc")):
        for i, label in enumerate(labels):
            vals = [(table[label].get(d) or {}).get(metric) for d in datasets]
            vals = [scale * v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0 for v in vals]
            ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=label)
        ax.set(title=metric.upper(), xticks=x, ylim=(0, scale))
        ax.set_xticklabels(datasets, rotation=15)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("percent" if percent else "fraction")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""The ablation report of `steper-ray ablate`: one row per loss mode, EM / F1 / Acc per dev set,
the setting that produced them, and the paper's reported figures beside them as a reference.

Our metrics are stored as fractions (evaluate's summary.json) and shown in percent with one
decimal, as the paper reports them. The chart is the comparison report's (``plot_metrics``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from steper_ray.evaluate.report import plot_metrics

log = logging.getLogger(__name__)

PAPER_SOURCE = "StepER (Lee et al., EMNLP 2025, arXiv:2510.07923)"

# The paper's reported figures, in percent: its main results for vanilla KD and StepER (HotpotQA
# EM / F1 / Acc, 2WikiMultihopQA and MuSiQue Acc) and its loss-weighting ablation (HotpotQA Acc
# with learned weights against fixed uniform, first-heavy and last-heavy weights). Produced by
# the paper's own teacher and 8B student on the full dev sets, not by this code.
PAPER_REFERENCE: dict[str, dict[str, dict[str, float]]] = {
    "steper": {"HotpotQA": {"em": 51.0, "f1": 62.8, "acc": 61.0},
               "2WikiMultihopQA": {"acc": 63.6}, "MuSiQue": {"acc": 34.1}},
    "uniform": {"HotpotQA": {"acc": 58.4}},
    "first_heavy": {"HotpotQA": {"acc": 57.7}},
    "last_heavy": {"HotpotQA": {"acc": 58.0}},
    "vanilla_kd": {"HotpotQA": {"em": 46.4, "f1": 57.3, "acc": 54.8},
                   "2WikiMultihopQA": {"acc": 62.2}, "MuSiQue": {"acc": 30.1}},
}
PAPER_COLUMNS = (("HotpotQA", "em"), ("HotpotQA", "f1"), ("HotpotQA", "acc"),
                 ("2WikiMultihopQA", "acc"), ("MuSiQue", "acc"))
METRICS = (("em", "EM"), ("f1", "F1"), ("acc", "Acc"))


def pct(value: float | None) -> str:
    """A fraction as the table shows it: percent, one decimal ("-" when absent)."""
    return "-" if value is None else f"{100 * value:.1f}"


def describe_loss(loss: dict[str, Any]) -> str:
    """One table cell for a loss config (train.loss as trained)."""
    if loss.get("mode") == "vanilla_kd":
        return "agg only, whole chain"
    target = f"target {loss.get('target')}"
    if loss.get("mode") == "steper":
        return f"learned σ_j, {target}"
    weights = "/".join(f"{w:g}" for w in loss.get("weights") or [])
    return f"weights {weights}, {target}"


def _setting_lines(setting: dict[str, Any]) -> list[str]:
    params = setting.get("params")
    student = f"`{setting.get('student')}`" + (f" ({params:,} parameters)" if params else "")
    questions = ", ".join(f"{d} {n}" for d, n in (setting.get("dev_questions") or {}).items())
    return [
        "What produced our numbers:",
        "",
        f"- student: {student}",
        f"- traces: {setting.get('traces')}",
        ("- training: optimizer steps and examples used per mode in the table; the same examples, "
        "data order and seed for every mode"),
        (f"- evaluation: {setting.get('evaluator')}; dev questions per dataset, the same for every "
        f"mode: {questions or 'none'}"),
        "",
        ("A run with a small student, few optimizer steps or few dev questions checks that the "
        "ablation runs end to end; it does not reproduce the paper's figures, which come from its "
        "own teacher and 8B student on the full dev sets."),
    ]


def ablation_table(modes: dict[str, dict[str, Any]], datasets: list[str]) -> list[str]:
    """Markdown rows: mode, loss, steps, examples, then EM / F1 / Acc (percent) per dataset."""
    head = ["mode", "loss", "steps", "examples"] + [f"{d} {label}" for d in datasets for _, label in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for mode, row in modes.items():
        train = row.get("train") or {}
        cells = [mode, describe_loss(row.get("loss") or {}), str(train.get("steps", "-")),
                 str(train.get("examples_used", "-"))]
        for d in datasets:
            m = (row.get("metrics") or {}).get(d) or {}
            cells += [pct(m.get(key)) for key, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paper_table() -> list[str]:
    head = ["mode"] + [f"{d} {dict(METRICS)[k]}" for d, k in PAPER_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(PAPER_COLUMNS)]
    for mode, figures in PAPER_REFERENCE.items():
        cells = [f"{figures[d][k]:.1f}" if k in figures.get(d, {}) else "-" for d, k in PAPER_COLUMNS]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def write_ablation_report(modes: dict[str, dict[str, Any]], setting: dict[str, Any], out: Path) -> dict[str, str]:
    """``ablation.md`` and ``ablation.png`` in ``out``; ``modes[m]`` holds the mode's ``loss``
    (as trained), ``train`` (its train summary) and ``metrics`` (its evaluate metrics)."""
    datasets = list(dict.fromkeys(d for row in modes.values() for d in (row.get("metrics") or {})))
    lines = [
        "# Loss ablation",
        "",
        "## This run",
        "",
        ("EM / F1 / Acc in percent on each dev set; one row per `train.loss` setting, each trained "
        "from the same kept teacher traces and evaluated on the same dev questions."),
        "",
        *ablation_table(modes, datasets),
        "",
        *_setting_lines(setting),
        "",
        "## Reference: the paper's reported figures (not produced by this code)",
        "",
        (f"From {PAPER_SOURCE}, in percent: vanilla KD against StepER on the three dev sets, and "
        "the loss-weighting ablation (learned against fixed weights) on HotpotQA Acc. \"-\": not "
        "reported for that setting."),
        "",
        *paper_table(),
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    report, plot = out / "ablation.md", out / "ablation.png"
    report.write_text("\n".join(lines))
    table = {mode: row.get("metrics") or {} for mode, row in modes.items()}
    plot_metrics(table, list(modes), datasets, plot, title="Loss ablation (this run; the paper's figures are in ablation.md)",
                 percent=True)
    log.info("ablation report %s, chart %s", report, plot)
    return {"report": str(report), "plot": str(plot)}

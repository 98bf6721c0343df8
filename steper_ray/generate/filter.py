"""Keep a teacher trace only if it is well formed and its answer is right."""

from __future__ import annotations

from steper_ray.config import FilterConfig
from steper_ray.evaluate.metrics import (
    answer_scores,
    contains_answer,
    is_yes_no,
    normalize_answer,
)
from steper_ray.reasoning.loop import Trace


def drop_reason(trace: Trace, golds: list[str], cfg: FilterConfig) -> str | None:
    """None when the trace is kept, else a short reason (the first that applies)."""
    if trace.error:
        return f"error: {trace.error}"
    if trace.failure:  # the model's output stayed unusable after every retry (reasoning/steps.py)
        return trace.failure
    if not trace.steps or trace.steps[0].task != "init":
        return "malformed: no init step"
    if trace.steps[-1].task != "agg":
        return "malformed: no agg step"
    if trace.answer is None:
        return "malformed: no answer marker"
    if any(s.task == "agg" for s in trace.steps[:-1]):
        return "malformed: agg before the last step"
    scores = answer_scores(trace.answer, golds)
    if cfg.match == "em":
        ok = scores["em"] == 1.0
    elif cfg.match == "f1":
        ok = scores["f1"] >= cfg.f1_threshold
    else:
        ok = contains_match(trace.answer, golds)
    return None if ok else f"wrong answer ({cfg.match})"


def contains_match(answer: str, golds: list[str]) -> bool:
    """The `contains` filter: a gold as whole words in the answer (``contains_answer``), except
    that a yes/no gold needs exactly that answer ("no, it is not" or "yes or no" would
    otherwise pass for a one-word gold)."""
    return any(
        normalize_answer(answer) == normalize_answer(g) if is_yes_no(g) else contains_answer(answer, g)
        for g in golds
    )


def reason_kind(reason: str) -> str:
    """Group reasons for the summary: 'error: prompt has 5000 tokens...' -> 'error'."""
    return reason.split(":", 1)[0].split(" (", 1)[0]

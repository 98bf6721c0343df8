"""Cut a kept trace into step-wise training examples: 1 init, 0..S-2 exp, 1 agg."""

from __future__ import annotations

from typing import Any

from steper_ray.reasoning.loop import Trace
from steper_ray.reasoning.prompts import completion_text

EXAMPLE_COLUMNS = ("id", "question_id", "task", "step", "prompt", "completion", "question", "passages", "reasoning")


def trace_examples(trace: Trace) -> list[dict[str, Any]]:
    """One example per step: the student's view of the step (the completion-layout ``prompt``,
    byte-identical to what a completion-format student sees at inference, and the same state as
    ``question``, ``passages`` and ``reasoning`` so far, from which a chat-format student's
    prompt is rendered) and that step's output as the completion."""
    out = []
    for index, s in enumerate(trace.steps):
        state = trace.state_at(index)
        out.append({
            "id": f"{trace.question_id}:{s.step}",
            "question_id": trace.question_id,
            "task": s.task,
            "step": s.step,
            "prompt": s.student_prompt,
            "completion": completion_text(s.output),
            "question": state.question,
            "passages": [{"id": p.id, "title": p.title, "text": p.text} for p in state.passages],
            "reasoning": state.reasoning,
        })
    return out

"""Cut a kept trace into step-wise training examples: 1 init, 0..S-2 exp, 1 agg."""

from __future__ import annotations

from typing import Any

from steper_ray.reasoning.loop import Trace
from steper_ray.reasoning.prompts import completion_text

EXAMPLE_COLUMNS = ("id", "question_id", "task", "step", "prompt", "completion")


def trace_examples(trace: Trace) -> list[dict[str, Any]]:
    """The student's prompt for each step (byte-identical to what it sees at inference) and
    that step's output as the completion."""
    return [
        {
            "id": f"{trace.question_id}:{s.step}",
            "question_id": trace.question_id,
            "task": s.task,
            "step": s.step,
            "prompt": s.student_prompt,
            "completion": completion_text(s.output),
        }
        for s in trace.steps
    ]

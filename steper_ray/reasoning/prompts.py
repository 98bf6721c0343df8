"""Prompts for one reasoning step: the student's view of the state, and the teacher's wrapper.

Student layout (IRCoT style), identical at training and inference:

    Wikipedia Title: <title 1>
    <text 1>

    Wikipedia Title: <title 2>
    <text 2>

    Q: <question>
    A: <r1>
     <r2>
     ...

The answer field holds the reasoning so far, one ``" <sentence>\n"`` per step, exactly the
completions of the earlier steps: so prompt(s) + completion(s) is prompt(s+1) without its new
passages, and "end the sentence with a newline" never conflicts with "continue after it" (the
model always writes a newline after a sentence; a new line starts the next one). Passages are
append-only in retrieval order, so the prompt of step s+1 starts with the whole passage block of
step s: consecutive steps share that prefix (vLLM prefix caching), and the teacher's instruction
and demonstrations form a prefix shared by every question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import yaml

from steper_ray.errors import UserError

COMPLETION_END = "\n"  # a step's output ends at a newline; generators stop there
DEFAULT_TEACHER_PROMPT = Path(__file__).with_name("teacher_prompt.yaml")


@dataclass(frozen=True)
class PromptPassage:
    id: str
    title: str
    text: str


@dataclass
class StepState:
    """What a step sees: the question, passages so far (in order) and reasoning so far."""

    question: str
    passages: list[PromptPassage] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)


def format_passages(passages: list[PromptPassage]) -> str:
    return "".join(f"Wikipedia Title: {p.title}\n{p.text}\n\n" for p in passages)


def student_prompt(state: StepState) -> str:
    """The one prompt builder for the student's view of a step (training and inference)."""
    answer = "".join(completion_text(r) for r in state.reasoning)
    return f"{format_passages(state.passages)}Q: {state.question}\nA:{answer}"


def completion_text(output: str) -> str:
    """Training target for a step's output: it continues ``A: ...`` after one space."""
    return f" {output}{COMPLETION_END}"


@dataclass(frozen=True)
class TeacherPrompt:
    """Instruction + few-shot demonstrations wrapped around the student layout."""

    header: str  # instruction and demonstrations: one prefix shared by every teacher prompt
    final_instruction: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> TeacherPrompt:
        p = Path(path) if path else DEFAULT_TEACHER_PROMPT
        if not p.is_file():
            raise UserError(f"teacher prompt file {p} does not exist; set reasoning.teacher_prompt "
                            f"to a YAML file like {DEFAULT_TEACHER_PROMPT}")
        try:
            data = yaml.safe_load(p.read_text())
            blocks = [data["instruction"].strip(), ""]
            for d in data.get("demonstrations") or []:
                passages = [PromptPassage("", x["title"], x["text"]) for x in d["passages"]]
                demo = StepState(d["question"], passages, [str(r) for r in d["reasoning"]])
                blocks.append(student_prompt(demo) + COMPLETION_END)
            return cls("\n".join(blocks) + "\n", data["final_instruction"].strip())
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(
                f"teacher prompt {p} is malformed ({exc.__class__.__name__}: {exc}); it needs "
                "'instruction', 'final_instruction' and 'demonstrations' with question, "
                "passages [{title, text}] and reasoning [sentences]"
            ) from None

    def render(self, state: StepState, final: bool) -> str:
        """Teacher prompt: shared header (+ a closing cue on the final step), then the state."""
        cue = f"{self.final_instruction}\n\n" if final else ""
        return f"{self.header}{cue}{student_prompt(state)}"

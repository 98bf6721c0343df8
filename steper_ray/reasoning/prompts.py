"""Prompts for one reasoning step: one builder for the student's and the teacher's view, in the
raw-completion layout or as chat messages rendered by the model's own chat template.

Completion layout (IRCoT style), the student's view:

    Wikipedia Title: <title 1>
    <text 1>

    Q: <question>
    A: <r1>
     <r2>

The answer field holds the reasoning so far, one ``" <sentence>\\n"`` per step, exactly the
completions of the earlier steps: so prompt(s) + completion(s) is prompt(s+1) without its new
passages, and "end the sentence with a newline" never conflicts with "continue after it".
Passages are append-only in retrieval order, so the prompt of step s+1 starts with the whole
passage block of step s (vLLM prefix caching), and the teacher's instruction and
demonstrations form a prefix shared by every question.

Chat layout (instruct models): the same passages and question are a user message, and the step
is generated inside the assistant turn, whose content is the same answer field ``A: <r1>\\n
...``. The teacher adds a system message (the instruction) and each demonstration as a user /
assistant pair; the student has neither (that is what distillation removes). Rendering goes
through the tokenizer's ``apply_chat_template`` (``add_generation_prompt=True``), then the
answer field so far is appended, so the model continues its own turn.

The student is trained on exactly the text it gets at inference: training and inference both
call ``PromptBuilder.render`` on the same ``StepState``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from steper_ray.errors import UserError

COMPLETION_END = "\n"  # a step's output ends at a newline; generators stop there
ANSWER_FIELD = "A:"
DEFAULT_TEACHER_PROMPT = Path(__file__).with_name("teacher_prompt.yaml")

PromptFormat = Literal["completion", "chat"]
Message = tuple[str, str]  # (role, content)
ChatTemplate = Callable[[Sequence[Message]], str]  # messages -> text that opens the assistant turn


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


@dataclass(frozen=True)
class Demonstration:
    """One worked example for the teacher: passages, question, reasoning ending in the answer."""

    question: str
    passages: tuple[PromptPassage, ...]
    reasoning: tuple[str, ...]
    source: str = ""  # where it came from (a dataset question id, or the bundled file)

    def state(self) -> StepState:
        return StepState(self.question, list(self.passages), list(self.reasoning))


def format_passages(passages: Sequence[PromptPassage]) -> str:
    return "".join(f"Wikipedia Title: {p.title}\n{p.text}\n\n" for p in passages)


def completion_text(output: str) -> str:
    """Training target for a step's output: it continues the answer field after one space."""
    return f" {output}{COMPLETION_END}"


def question_block(state: StepState) -> str:
    """Passages, then the question line (no trailing newline)."""
    return f"{format_passages(state.passages)}Q: {state.question}"


def answer_field(reasoning: Sequence[str]) -> str:
    """``A:`` followed by every earlier step's completion: the reasoning so far."""
    return ANSWER_FIELD + "".join(completion_text(r) for r in reasoning)


def student_prompt(state: StepState) -> str:
    """The student's view of a step in the completion layout."""
    return f"{question_block(state)}\n{answer_field(state.reasoning)}"


@dataclass(frozen=True)
class RenderedPrompt:
    """A step's prompt: ``text`` for a local engine; ``messages`` (chat only) for a remote chat
    API, the last one the unfinished assistant turn; ``reasoning_start`` is the character offset
    in ``text`` where the reasoning so far begins (after ``A:``), for cumulative labels."""

    text: str
    messages: tuple[Message, ...] | None
    reasoning_start: int


def plain_chat_text(messages: Sequence[Message]) -> str:
    """A readable rendering of chat messages, used only where no tokenizer template exists (a
    remote chat API renders them itself): what the trace records as the prompt."""
    return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"


class PromptBuilder:
    """Renders a ``StepState`` as one step's prompt; the same object (format, template,
    instruction, demonstrations) for every step of a question.

    ``fmt='chat'`` needs ``chat_template`` to render ``text`` for a local engine; without one the
    messages are exact and ``text`` is only a readable record (remote chat APIs).
    """

    def __init__(self, fmt: PromptFormat = "completion", chat_template: ChatTemplate | None = None,
                 instruction: str | None = None, final_instruction: str | None = None,
                 demos: Sequence[Demonstration] = ()):
        if fmt not in ("completion", "chat"):
            raise ValueError(f"prompt format must be 'completion' or 'chat', got {fmt!r}")
        self.format: PromptFormat = fmt
        self.chat_template = chat_template
        self.instruction = instruction
        self.final_instruction = final_instruction
        self.demos = tuple(demos)
        self._header = self._completion_header() if fmt == "completion" else ""

    @classmethod
    def student(cls, fmt: PromptFormat = "completion", chat_template: ChatTemplate | None = None) -> PromptBuilder:
        """The bare step prompt: no instruction, no demonstrations."""
        return cls(fmt, chat_template)

    @classmethod
    def teacher(cls, spec: TeacherPromptSpec, demos: Sequence[Demonstration] | None = None,
                fmt: PromptFormat = "completion", chat_template: ChatTemplate | None = None) -> PromptBuilder:
        """Instruction + demonstrations (``demos`` replaces the file's own) + the closing cue."""
        return cls(fmt, chat_template, spec.instruction, spec.final_instruction,
                   spec.demos if demos is None else demos)

    @property
    def is_teacher(self) -> bool:
        return self.instruction is not None

    def _completion_header(self) -> str:
        if self.instruction is None:
            return ""
        blocks = [self.instruction.strip(), ""]
        blocks += [student_prompt(d.state()) + COMPLETION_END for d in self.demos]
        return "\n".join(blocks) + "\n"

    def messages(self, state: StepState, final: bool = False) -> tuple[Message, ...]:
        """Chat messages up to the user turn of this question (the assistant turn not opened)."""
        msgs: list[Message] = []
        if self.instruction is not None:
            msgs.append(("system", self.instruction.strip()))
        for d in self.demos:
            msgs += [("user", question_block(d.state())), ("assistant", answer_field(d.reasoning))]
        cue = f"\n\n{self.final_instruction.strip()}" if final and self.final_instruction else ""
        msgs.append(("user", question_block(state) + cue))
        return tuple(msgs)

    def render(self, state: StepState, final: bool = False) -> RenderedPrompt:
        """The prompt for the next step of ``state``; ``final`` adds the teacher's closing cue."""
        answer = answer_field(state.reasoning)
        if self.format == "completion":
            cue = f"{self.final_instruction.strip()}\n\n" if final and self.final_instruction else ""
            head = f"{self._header}{cue}{question_block(state)}\n"
            return RenderedPrompt(head + answer, None, len(head) + len(ANSWER_FIELD))
        msgs = self.messages(state, final)
        opened = self.chat_template(msgs) if self.chat_template is not None else plain_chat_text(msgs)
        return RenderedPrompt(opened + answer, (*msgs, ("assistant", answer)), len(opened) + len(ANSWER_FIELD))

    def __call__(self, state: StepState, final: bool = False) -> str:
        return self.render(state, final).text


@dataclass(frozen=True)
class TeacherPromptSpec:
    """The teacher's instruction, closing cue and demonstrations, from a YAML file."""

    instruction: str
    final_instruction: str
    demos: tuple[Demonstration, ...]
    path: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> TeacherPromptSpec:
        """Read ``path`` (None: the bundled ``teacher_prompt.yaml``). Raises UserError naming
        every problem, with the file's expected shape, when it is absent, not UTF-8 YAML, or
        has a field missing or of the wrong kind (a ``reasoning`` string instead of a list of
        sentences, an empty ``instruction``)."""
        p = Path(path) if path else DEFAULT_TEACHER_PROMPT
        shape = ("it needs 'instruction' and 'final_instruction' (text) and 'demonstrations' (a list of "
                 "question, passages [{title, text}] and reasoning [sentences]), as in " + str(DEFAULT_TEACHER_PROMPT))
        if not p.is_file():
            raise UserError(f"teacher prompt file {p} does not exist; set reasoning.teacher_prompt "
                            f"to a YAML file like {DEFAULT_TEACHER_PROMPT}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise UserError(f"teacher prompt {p} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            "save it as UTF-8 YAML") from None
        except yaml.YAMLError as exc:
            raise UserError(f"teacher prompt {p} is not valid YAML ({exc}); {shape}") from None
        problems = _teacher_prompt_problems(data)
        if problems:
            raise UserError(f"teacher prompt {p} is malformed: {'; '.join(problems)}; {shape}")
        demos = tuple(
            Demonstration(d["question"], tuple(PromptPassage("", x["title"], x["text"]) for x in d["passages"]),
                          tuple(d["reasoning"]), source=str(p))
            for d in data.get("demonstrations") or []
        )
        return cls(data["instruction"].strip(), data["final_instruction"].strip(), demos, str(p))


def _teacher_prompt_problems(data: Any) -> list[str]:
    """What a loaded teacher prompt YAML lacks, one entry per problem (empty: well formed)."""
    if not isinstance(data, dict):
        return [f"it holds a {type(data).__name__}, not a mapping"]

    def text(value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    problems = [f"'{key}' is {'missing' if key not in data else repr(data[key])[:40]}, not text"
                for key in ("instruction", "final_instruction") if not text(data.get(key))]
    unknown = sorted(str(k) for k in data if k not in ("instruction", "final_instruction", "demonstrations"))
    if unknown:
        problems.append(f"unknown key(s) {unknown}")
    if "demonstrations" not in data:
        problems.append("'demonstrations' is missing ([] for none: a zero-shot teacher)")
    demos = data.get("demonstrations")
    if demos is not None and not isinstance(demos, list):
        return problems + [f"'demonstrations' is a {type(demos).__name__}, not a list"]
    for n, d in enumerate(demos or [], 1):
        where = f"demonstration {n}"
        if not isinstance(d, dict):
            problems.append(f"{where} is a {type(d).__name__}, not a mapping")
            continue
        if not text(d.get("question")):
            problems.append(f"{where}: 'question' is missing or not text")
        passages = d.get("passages")
        if not isinstance(passages, list) or not all(
                isinstance(x, dict) and isinstance(x.get("title"), str) and text(x.get("text")) for x in passages):
            problems.append(f"{where}: 'passages' must be a list of {{title, text}}")
        reasoning = d.get("reasoning")
        if not isinstance(reasoning, list) or not reasoning or not all(text(r) for r in reasoning):
            problems.append(f"{where}: 'reasoning' must be a list of sentences, not {type(reasoning).__name__}")
    return problems


def with_demos(builder: PromptBuilder, demos: Sequence[Demonstration]) -> PromptBuilder:
    """The same builder with other demonstrations (one per dataset)."""
    return PromptBuilder(builder.format, builder.chat_template, builder.instruction,
                         builder.final_instruction, demos)


def encode_prompt(tokenizer: Any, text: str, offsets: bool = False) -> Any:
    """Tokenise a rendered prompt the one way engines and training both use.

    A chat template may already begin with the BOS token; a tokenizer that also adds one would
    double it, so then no special tokens are added. Returns the tokenizer's encoding
    (``input_ids``, and ``offset_mapping`` when ``offsets``)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=offsets)


__all__ = [
    "ANSWER_FIELD", "COMPLETION_END", "ChatTemplate", "Demonstration", "Message", "PromptBuilder",
    "PromptFormat", "PromptPassage", "RenderedPrompt", "StepState", "TeacherPromptSpec",
    "answer_field", "completion_text", "encode_prompt", "format_passages", "plain_chat_text",
    "question_block", "student_prompt", "with_demos",
]

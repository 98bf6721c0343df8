"""Which prompt layout a model gets (completion or chat) and its chat template.

``auto`` resolves per model directory: the format a trained student was trained with (recorded
in its export as ``steper_ray.json``), else ``chat`` when the tokenizer has a chat template, else
``completion``. A student is evaluated and served in the format it was trained in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steper_ray.config import GeneratorConfig, ReasoningConfig
from steper_ray.errors import UserError
from steper_ray.reasoning.prompts import (
    ChatTemplate,
    Demonstration,
    Message,
    PromptBuilder,
    PromptFormat,
    TeacherPromptSpec,
)

RECORD = "steper_ray.json"


def record_prompt_format(model_dir: str | Path, fmt: PromptFormat) -> None:
    """Write the format a model was trained with into its directory."""
    (Path(model_dir) / RECORD).write_text(json.dumps({"prompt_format": fmt}) + "\n")


def recorded_prompt_format(model_dir: str | Path) -> PromptFormat | None:
    try:
        fmt = json.loads((Path(model_dir) / RECORD).read_text()).get("prompt_format")
    except (OSError, ValueError, AttributeError):
        return None
    return fmt if fmt in ("completion", "chat") else None


def chat_template_of(tokenizer: Any) -> ChatTemplate | None:
    """The tokenizer's chat template as a messages -> text function that opens the assistant
    turn; None when it has none. A template that rejects a system turn gets it merged into the
    first user turn."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: Sequence[Message]) -> str:
        msgs = [{"role": r, "content": c} for r, c in messages]
        try:
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - jinja TemplateError: e.g. "System role not supported"
            if not msgs or msgs[0]["role"] != "system" or len(msgs) < 2:
                raise
            merged = [{"role": "user", "content": f"{msgs[0]['content']}\n\n{msgs[1]['content']}"}, *msgs[2:]]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

    return render


def resolve_prompt_format(requested: str, model_dir: str | None, tokenizer: Any = None
                          ) -> tuple[PromptFormat, ChatTemplate | None]:
    """(format, chat template) for a local model directory (or a loaded ``tokenizer``).

    ``model_dir`` None means a remote model: ``auto`` is completion and ``chat`` sends messages
    without a local template. Raises UserError when ``chat`` is asked of a model without a
    tokenizer or chat template."""
    if model_dir is None and tokenizer is None:
        return ("chat", None) if requested == "chat" else ("completion", None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as exc:
            raise UserError(f"model directory {model_dir} has no usable tokenizer ({type(exc).__name__}); "
                            "point the model setting at a complete Hugging Face directory") from None
    template = chat_template_of(tokenizer)
    if requested == "completion":
        return "completion", None
    if requested == "chat":
        if template is None:
            raise UserError(f"prompt_format 'chat' needs a chat template, and {model_dir} has none; set "
                            "prompt_format: completion (or auto) for this model")
        return "chat", template
    recorded = recorded_prompt_format(model_dir) if model_dir else None
    fmt: PromptFormat = recorded or ("chat" if template is not None else "completion")
    if fmt == "chat" and template is None:
        raise UserError(f"{model_dir} was trained with chat prompts but its tokenizer has no chat template; "
                        "restore chat_template.jinja from the base model")
    return fmt, template if fmt == "chat" else None


def builder_for(model: GeneratorConfig, role: str, reasoning: ReasoningConfig | None = None,
                demos: Sequence[Demonstration] | None = None) -> PromptBuilder:
    """The PromptBuilder for a generator config (``model``, its ``model`` already a local path
    for vllm/hf): the bare student prompt or, for ``role='teacher'``, the teacher's instruction
    and demonstrations (``demos``, else the teacher prompt file's) from ``reasoning``. Raises
    UserError when the requested format does not fit the model (see resolve_prompt_format)."""
    fmt: PromptFormat
    if model.kind == "evidence":  # writes from annotations; its prompt is only recorded
        fmt, template = "completion", None
    else:
        fmt, template = resolve_prompt_format(model.prompt_format, model.model if model.kind in ("vllm", "hf") else None)
    if role == "student":
        return PromptBuilder.student(fmt, template)
    spec = TeacherPromptSpec.load(reasoning.teacher_prompt if reasoning is not None else None)
    return PromptBuilder.teacher(spec, demos, fmt, template)

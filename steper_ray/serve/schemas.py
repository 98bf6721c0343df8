"""Request and response models of the steper API (``/v1/answer``, ``/v1/answer/stream``), with
every limit the server enforces declared in them, so the OpenAPI schema states exactly what is
accepted: the limits come from ``ServeConfig`` (``Limits``) and the models are built from them
(``answer_request_model``). Pydantic enforces what the schema declares, and ``problems`` turns
its errors into messages that say what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model

from steper_ray.config import ServeConfig
from steper_ray.serve.errors import clipped


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (from ``ServeConfig``) and the server's defaults."""

    max_question_chars: int
    max_steps: int
    max_k: int
    max_timeout_s: float
    default_steps: int
    default_k: int
    max_tokens: int  # the served model's most tokens per step

    @classmethod
    def of(cls, cfg: ServeConfig, default_steps: int, default_k: int, max_tokens: int) -> Limits:
        return cls(cfg.max_question_chars, cfg.max_steps, cfg.max_k, cfg.request_timeout_s,
                   min(default_steps, cfg.max_steps), min(default_k, cfg.max_k), max_tokens)


def surrogate_problem(text: str) -> str:
    """Why ``text`` is not valid Unicode: a lone UTF-16 surrogate (JSON ``"\\ud800"``), which
    is no character (pydantic refuses such strings: 'string_unicode')."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return f"contains an unpaired UTF-16 surrogate (U+{ord(ch):04X} at character {i}); send valid Unicode text"
    return "is not valid Unicode text"


# One character that is not whitespace, spelled so that ECMA-262 (what JSON Schema and its
# clients read), Python's re (str.strip() here) and Rust's regex (pydantic) agree: each one's
# whitespace plus the others' extras (U+001C-001F, U+0085, U+FEFF); and not one of the invisible
# format characters that are no whitespace to any of them (U+180E, zero-width U+200B-U+200D, U+2060).
NOT_BLANK = r"[^\s\x1c-\x1f\x85\ufeff\u180e\u200b-\u200d\u2060]"


def question_type(limits: Limits) -> Any:
    """A question: 1..max characters with at least one that is not whitespace (valid Unicode:
    every pydantic string is)."""
    return Annotated[str, Field(min_length=1, max_length=limits.max_question_chars, pattern=NOT_BLANK)]


STRICT = ConfigDict(extra="forbid", regex_engine="python-re")


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0, never true, "3" or 3.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Numbers and booleans as JSON Schema types them (pydantic's lax mode would take "3" and true).
JsonFloat = Annotated[float, Strict()]
JsonBool = Annotated[bool, Strict()]


def json_int(ge: int, le: int) -> Any:
    """An integer in [ge, le] (the bounds declared in the schema; the validator after them)."""
    return Annotated[int, Strict(), Field(ge=ge, le=le), BeforeValidator(_json_integer)]


def answer_request_model(limits: Limits) -> type[BaseModel]:
    """The body of ``/v1/answer`` and ``/v1/answer/stream``."""
    return create_model(
        "AnswerRequest",
        __config__=STRICT,
        question=(question_type(limits), Field(description=(
            f"The question, in plain text: 1 to {limits.max_question_chars} characters, not all whitespace or zero-width characters."))),
        max_steps=(json_int(2, limits.max_steps) | None, Field(
            limits.default_steps, description=f"Most reasoning steps, 2 to {limits.max_steps} (null: the "
            "server's reasoning.max_steps).")),
        k=(json_int(1, limits.max_k) | None, Field(
            limits.default_k, description=f"Passages retrieved per step, 1 to {limits.max_k} (null: the "
            "server's retrieval.k).")),
        timeout_s=(Annotated[JsonFloat, Field(gt=0, le=limits.max_timeout_s)] | None, Field(
            None, description=f"Give up after this many seconds (504), above 0 and at most "
            f"{limits.max_timeout_s:g} (null: {limits.max_timeout_s:g}).")),
    )


class PassageOut(BaseModel):
    id: str = Field(description="The passage's id in the served index.")
    title: str = Field(description="Its title.")


class StepOut(BaseModel):
    step: int = Field(description="1-based step number.")
    task: str = Field(description="init, exp or agg.")
    query: str = Field(description="What was retrieved with at this step.")
    passages: list[PassageOut] = Field(description="The passages this step's retrieval returned.")
    reasoning: str = Field(description="The sentence the model wrote at this step.")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens over every generation call of the request.")
    completion_tokens: int = Field(description="Tokens generated over every step and retry.")
    total_tokens: int = Field(description="Their sum.")


class AnswerResponse(BaseModel):
    answer: str | None = Field(description="The final answer; null when the model never gave one.")
    steps: list[StepOut] = Field(description="Every step, in order.")
    latency_ms: float = Field(description="Time the server spent on the request.")
    error: str | None = Field(None, description="Why no answer was produced (e.g. an over-long prompt, "
                                                "output that stayed unusable after the retries, or steps that ran "
                                                "out before the answer marker); null with an answer.")
    usage: Usage = Field(description="Token counts.")


_UNION_TAGS = {"str", "none", "int", "float", "bool"}
_ROLE_TAGS = {"system", "developer", "user", "assistant"}  # a message's discriminator


class StreamError(BaseModel):
    """The data of the steper stream's ``error`` event."""

    status: int = Field(description="The HTTP status the failure would have had (503, 504, 500).")
    detail: str = Field(description="What went wrong.")


def field_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the request field's dotted path ("messages.0.content"),
    without "body" and the union-member names pydantic adds ("str", "list[...]", a message's role)."""
    parts: list[str] = []
    for i, p in enumerate(loc):
        if p == "body" and i == 0:
            continue
        text = str(p)
        if text in _UNION_TAGS or "[" in text or "-" in text:
            continue
        if text in _ROLE_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue
        parts.append(text)
    return ".".join(parts) or "body"


LISTED = 10  # problems an error message lists; a body of thousands of bad items gets a short reply


def problem_list(found: list[tuple[str, str, str, Any]]) -> str:
    """"path: message; ..." for the first ``LISTED`` problems of ``problems``, then how many more."""
    text = "; ".join(f"{p}: {m}" for p, m, _, _ in found[:LISTED])
    return text + (f"; and {len(found) - LISTED} more" if len(found) > LISTED else "")


def problems(errors: list[dict[str, Any]], limits: Limits) -> list[tuple[str, str, str, Any]]:
    """(field path, message, pydantic error type, input) per field at fault: for a union, one
    member's error, the first that is not a type mismatch if any (a list of two text parts is
    told it holds too many parts, not that it is no string)."""
    out: dict[str, tuple[str, str, str, Any]] = {}
    for e in errors:
        path, message = problem(e, limits)
        path, message = clipped(path), clipped(message, 200)  # both may quote the client's input
        kind = str(e.get("type"))
        if path not in out or (out[path][2].endswith("_type") and not kind.endswith("_type")):
            out[path] = (path, message, kind, e.get("input"))
    return list(out.values())


def _range(field: str, limits: Limits) -> str | None:
    return {
        "max_steps": f"must be between 2 and {limits.max_steps}",
        "k": f"must be between 1 and {limits.max_k}",
        "timeout_s": f"must be above 0 and at most {limits.max_timeout_s:g}",
    }.get(field)


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def problem(error: dict[str, Any], limits: Limits) -> tuple[str, str]:
    """(field path, message) of one pydantic error, worded to say what to send instead."""
    path = field_path(tuple(error.get("loc", ())))
    field = path.rsplit(".", 1)[-1]
    kind, value = error.get("type"), error.get("input")
    if kind in _BOUND_ERRORS and (what := _range(field, limits)) is not None:
        return path, f"{what}, got {value!r}"
    if kind in ("string_too_short", "string_pattern_mismatch") and field in ("question", "content", "text"):
        return path, "is empty (or only whitespace or invisible characters); send the question text"
    if kind == "string_too_long" and field in ("question", "content", "text"):
        return path, f"has {len(value)} characters, over the limit of {limits.max_question_chars}"
    if kind == "too_long" and field == "content" and isinstance(value, list):
        return path, f"holds {len(value)} parts; send the question as one text part (or as a string)"
    if kind == "string_unicode" and isinstance(value, str):
        return path, surrogate_problem(value)
    if kind == "value_error":
        return path, str(error.get("ctx", {}).get("error", error.get("msg")))
    return path, str(error.get("msg"))

"""The OpenAI-compatible API: request and response models of ``POST /v1/chat/completions`` and
``GET /v1/models``, and the conversion of the loop's events into OpenAI's shapes (shapes as in
OpenAI's API reference and the ``openai`` SDK's types: ``ChatCompletion``,
``ChatCompletionChunk``, ``Model``, ``ErrorObject``).

A chat completion here is one run of the step-wise loop:

- the question is the last user message (earlier messages are accepted and not used: the
  student answers one question at a time);
- ``choices[0].message.content`` is the answer (null when the model gave none);
- ``choices[0].message.reasoning_content`` is the reasoning sentences, one per line (the field
  name vLLM, DeepSeek and other reasoning servers use);
- ``steper`` (an extension field) holds every step ``{"step", "task", "query", "passages":
  [{"id", "title"}], "reasoning"}``, the error if any and the server's latency;
- with ``stream: true``: one chunk per step as it is produced (``delta.reasoning_content``, the
  step in ``steper.step``), then a chunk with the answer (``delta.content``, finish_reason
  ``stop``, all steps in ``steper``), a usage chunk when ``stream_options.include_usage``, then
  ``data: [DONE]``. A failure after the stream began is a ``data: {"error": {...}}`` event
  (the SDK raises it as an APIError), then ``[DONE]``.

Request fields map onto the step settings: ``max_tokens`` (or ``max_completion_tokens``) is
the most tokens of each reasoning step, ``temperature`` and ``seed`` the steps' sampling. Fields
the loop cannot honour are declared with the only value it accepts (``n`` 1, ``logprobs``
false, no ``tools``, ...), so anything else is a 400 that names the field. Extensions: ``k``
and ``max_steps``, as in ``/v1/answer``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from steper_ray.reasoning.generators.protocol import Sampling
from steper_ray.serve.schemas import STRICT, JsonBool, JsonFloat, Limits, StepOut, Usage, json_int, question_type

OWNER = "steper-ray"

# Fields of OpenAI's request that the loop cannot honour, with why (the 400's message).
UNSUPPORTED = {
    "n": "this server writes one answer per request; send n=1 or leave n out",
    "logprobs": "token log-probabilities are not returned; leave logprobs out",
    "top_logprobs": "token log-probabilities are not returned; leave top_logprobs out",
    "tools": "the model cannot call tools; leave tools out",
    "tool_choice": "the model cannot call tools; leave tool_choice out (or 'none')",
    "functions": "the model cannot call functions; leave functions out",
    "function_call": "the model cannot call functions; leave function_call out (or 'none')",
    "response_format": "only plain text answers; leave response_format out (or type 'text')",
    "stop": "steps end where the loop ends them; leave stop out",
    "top_p": "nucleus sampling is not available; leave top_p out (or 1)",
    "presence_penalty": "penalties are not available; leave presence_penalty out (or 0)",
    "frequency_penalty": "penalties are not available; leave frequency_penalty out (or 0)",
    "logit_bias": "logit_bias is not available; leave it out",
}


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"] = Field(description="Only text parts are accepted.")
    text: str = Field(description="The text.")


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: JsonBool | None = Field(
        None, description="Send a last chunk with the request's token usage (and no choices).")


class ResponseFormat(BaseModel):
    model_config = STRICT
    type: Literal["text"] = Field(description="Only 'text'.")


def _has_user_message(messages: list[Any]) -> list[Any]:
    if not any(m.role == "user" for m in messages):
        raise ValueError("needs a user message: the last one is the question")
    return messages


def chat_request_model(limits: Limits, model_name: str) -> type[BaseModel]:
    """The body of ``POST /v1/chat/completions``, with this server's limits and model name."""
    question = question_type(limits)
    user_part = create_model("UserTextPart", __config__=STRICT,
                             type=(Literal["text"], Field(description="Only text parts are accepted.")),
                             text=(question, Field(description="The question.")))
    system = create_model(
        "SystemMessage", __config__=STRICT,
        role=(Literal["system", "developer"], Field(description="Instructions; accepted and not used.")),
        content=(str | list[TextPart], Field(description="Text, or text parts.")),
        name=(str | None, Field(None, description="Accepted and not used.")))
    user = create_model(
        "UserMessage", __config__=STRICT,
        role=(Literal["user"], Field(description="The last user message is the question.")),
        content=(question | Annotated[list[user_part], Field(min_length=1, max_length=1)],  # type: ignore[valid-type]
                 Field(description=f"The question: text of 1 to {limits.max_question_chars} characters, "
                                   "not all whitespace or zero-width characters (or one text part holding it).")),
        name=(str | None, Field(None, description="Accepted and not used.")))
    # an earlier answer comes back as the SDK returned it (refusal, tool_calls, annotations, this
    # server's reasoning_content ...): any further field is accepted and not used
    assistant = create_model(
        "AssistantMessage", __config__=ConfigDict(extra="allow", regex_engine="python-re"),
        role=(Literal["assistant"], Field(description="An earlier answer; accepted and not used, with any "
                                                      "further fields it carries.")),
        content=(str | list[TextPart] | None, Field(None, description="Text, or text parts.")),
        name=(str | None, Field(None, description="Accepted and not used.")))
    message = Annotated[system | user | assistant, Field(discriminator="role")]  # type: ignore[valid-type]
    none_or = Field(None)

    def unsupported(kind: Any, doc: str) -> tuple[Any, Any]:
        return kind | None, Field(None, description=f"Only the value shown is accepted ({doc}).")

    return create_model(
        "ChatCompletionRequest",
        __config__=ConfigDict(extra="forbid", regex_engine="python-re"),
        model=(Literal[model_name], Field(description=f"The served model: '{model_name}' (GET /v1/models).")),
        messages=(Annotated[list[message], Field(min_length=1, json_schema_extra={  # type: ignore[valid-type]
            "contains": {"type": "object", "properties": {"role": {"const": "user"}}, "required": ["role"]}}),
            AfterValidator(_has_user_message)],
            Field(description="The conversation; the last user message is the question.")),
        stream=(JsonBool | None, Field(False, description="Send chunks as server-sent events.")),
        stream_options=(StreamOptions | None, none_or),
        max_tokens=(json_int(1, limits.max_tokens) | None, Field(
            None, description=f"Most tokens of each reasoning step, 1 to {limits.max_tokens} (null: the "
            "server's).")),
        max_completion_tokens=(json_int(1, limits.max_tokens) | None, Field(
            None, description="The same as max_tokens (OpenAI's newer name); wins when both are sent.")),
        temperature=(Annotated[JsonFloat, Field(ge=0, le=2)] | None, Field(
            None, description="Sampling temperature of the steps, 0 (greedy) to 2 (null: the server's).")),
        seed=(json_int(0, 2**32 - 1) | None, Field(
            None, description="Sampling seed of the steps (null: the server's).")),
        user=(str | None, Field(None, description="Accepted and not used.")),
        k=(json_int(1, limits.max_k) | None, Field(
            None, description=f"Extension: passages retrieved per step, 1 to {limits.max_k}.")),
        max_steps=(json_int(2, limits.max_steps) | None, Field(
            None, description=f"Extension: most reasoning steps, 2 to {limits.max_steps}.")),
        n=unsupported(json_int(1, 1), "1"),
        logprobs=unsupported(Literal[False], "false"),
        top_logprobs=unsupported(json_int(0, 0), "0"),
        tools=unsupported(Annotated[list[Any], Field(max_length=0)], "an empty list"),
        tool_choice=unsupported(Literal["none"], "'none'"),
        functions=unsupported(Annotated[list[Any], Field(max_length=0)], "an empty list"),
        function_call=unsupported(Literal["none"], "'none'"),
        parallel_tool_calls=(JsonBool | None, Field(None, description="Accepted and not used.")),
        response_format=unsupported(ResponseFormat, "type 'text'"),
        stop=unsupported(Annotated[list[str], Field(max_length=0)], "an empty list"),
        top_p=unsupported(Annotated[JsonFloat, Field(ge=1, le=1)], "1"),
        presence_penalty=unsupported(Annotated[JsonFloat, Field(ge=0, le=0)], "0"),
        frequency_penalty=unsupported(Annotated[JsonFloat, Field(ge=0, le=0)], "0"),
        logit_bias=unsupported(Annotated[dict[str, Any], Field(max_length=0)], "an empty object"),
    )


def question_of(request: Any) -> str:
    """The last user message's text (validated: present, 1..max characters)."""
    last = next(m for m in reversed(request.messages) if m.role == "user")
    content = last.content
    text = content if isinstance(content, str) else content[0].text
    return text.strip()


def sampling_of(request: Any) -> Sampling:
    most = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    return Sampling(temperature=request.temperature, max_tokens=most, seed=request.seed)


# --- responses --------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str = Field(description="The model name to send in 'model'.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the server started.")
    owned_by: str = OWNER


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer; null when the model gave none.")
    reasoning_content: str = Field(description="The reasoning sentences, one per line, the last one closing "
                                               "with 'So the answer is: ...'.")


class ChoiceOut(BaseModel):
    index: int = 0
    message: AssistantOut
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class SteperExtension(BaseModel):
    steps: list[StepOut] = Field(description="Every step: query, passages (id and title), sentence.")
    error: str | None = Field(description="Why no answer was produced, if none was.")
    latency_ms: float = Field(description="Time the reasoner spent on the request.")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: Usage
    steper: SteperExtension = Field(description="Extension: the full steps of the step-wise loop.")


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = Field(None, description="In the first chunk.")
    reasoning_content: str | None = Field(None, description="A step's sentence (a newline before all but the first).")
    content: str | None = Field(None, description="The answer, in the last chunk with a choice.")


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop"] | None = Field(description="'stop' in the answer chunk.")
    logprobs: None = None


class ChunkExtension(BaseModel):
    step: StepOut | None = Field(None, description="A reasoning chunk's step.")
    steps: list[StepOut] | None = Field(None, description="The answer chunk: every step.")
    error: str | None = Field(None, description="The answer chunk: why no answer was produced, if none was.")
    latency_ms: float | None = Field(None, description="The answer chunk: the reasoner's time.")


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = Field(description="Empty in the usage chunk.")
    usage: Usage | None = Field(None, description="The usage chunk (stream_options.include_usage).")
    steper: ChunkExtension | None = Field(None, description="Extension: the step of a reasoning chunk, all "
                                                            "steps in the answer chunk.")


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def reasoning_text(steps: list[dict[str, Any]]) -> str:
    return "\n".join(s["reasoning"] for s in steps)


def completion_body(answer: dict[str, Any], model: str, completion_id: str | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object from the loop's answer event data."""
    return {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
            "role": "assistant", "content": answer["answer"], "reasoning_content": reasoning_text(answer["steps"])}}],
        "usage": answer["usage"],
        "steper": {"steps": answer["steps"], "error": answer["error"], "latency_ms": answer["latency_ms"]},
    }


class ChunkWriter:
    """The ``chat.completion.chunk`` events of one streamed completion, as SSE ``data:`` lines."""

    def __init__(self, model: str, include_usage: bool):
        self.id, self.created, self.model = new_completion_id(), int(time.time()), model
        self.include_usage = include_usage
        self.steps = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None, extra: dict[str, Any]) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    def step(self, step: dict[str, Any]) -> str:
        """One step: its sentence as a reasoning delta (a newline before all but the first)."""
        delta: dict[str, Any] = {"reasoning_content": ("\n" if self.steps else "") + step["reasoning"]}
        if not self.steps:
            delta = {"role": "assistant", **delta}
        self.steps += 1
        return self._chunk(delta, None, {"steper": {"step": step}})

    def answer(self, answer: dict[str, Any]) -> str:
        """The answer chunk, the usage chunk when asked for, and the end of the stream."""
        delta: dict[str, Any] = {"content": answer["answer"]}
        if not self.steps:
            delta = {"role": "assistant", **delta}
        out = self._chunk(delta, "stop", {"steper": {"steps": answer["steps"], "error": answer["error"],
                                                      "latency_ms": answer["latency_ms"]}})
        if self.include_usage:
            usage = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": answer["usage"]}
            out += f"data: {json.dumps(usage)}\n\n"
        return out + DONE


DONE = "data: [DONE]\n\n"

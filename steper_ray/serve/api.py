"""The HTTP API (FastAPI), built per server from its config: the steper API and the
OpenAI-compatible API over one ``Backend`` (the reasoner deployment's handle in Serve, a fake in
unit tests).

- ``POST /v1/answer``: the answer and every step, JSON;
- ``POST /v1/answer/stream``: server-sent events, one ``step`` per step as it is produced, then
  ``answer`` (or one ``error`` event: ``{"status", "detail"}``);
- ``GET /v1/models`` and ``POST /v1/chat/completions``: ``steper_ray.serve.openai_api``;
- ``GET /healthz``; the OpenAPI schema at ``/openapi.json`` (docs at ``/docs``).

The schema declares every limit the server enforces (from ``ServeConfig``), the content type of
every 200 (``text/event-stream`` for streams) and, with auth on, the bearer security scheme.
Errors are mapped to statuses once, here and in ``guard`` / ``errors``: a body not sent as JSON
415, invalid JSON or invalid UTF-8 400, a body over ``serve.max_body_bytes`` 413, a wrong or
missing token 401 (checked before the body is read), a request the schema rejects 422 on the
steper API and 400 on the OpenAI API (404 for an unknown model), a down retriever 503, a request
over its time limit 504, a bug 500.

This module has no ``from __future__ import annotations``: FastAPI reads the request models of
the routes (built per config) from their annotations at run time.
"""

import json
import logging
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from steper_ray.reasoning.generators.protocol import Sampling
from steper_ray.serve.errors import (
    ApiError,
    clipped,
    ErrorResponse,
    OpenAIErrorResponse,
    SafeJSONResponse,
    error_response,
    example_body,
    failure_error,
    is_openai_path,
    model_not_found_error,
    not_json_error,
    stream_error_event,
    unknown_route_error,
)
from steper_ray.serve.guard import RequestGuard, is_json_content_type
from steper_ray.serve.metrics import CountRequests, EdgeMetrics, NoMetrics, route_of
from steper_ray.serve.openai_api import (
    DONE,
    UNSUPPORTED,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkWriter,
    ModelCard,
    ModelList,
    chat_request_model,
    completion_body,
    question_of,
    sampling_of,
)
from steper_ray.serve.schemas import (
    AnswerResponse,
    Limits,
    StepOut,
    StreamError,
    answer_request_model,
    problem_list,
    problems,
    surrogate_problem,
)
from steper_ray.serve.service import AnswerSettings

log = logging.getLogger(__name__)


class Backend(Protocol):
    async def answer(self, question: str, settings: AnswerSettings) -> dict[str, Any]:
        """``{"data": ANSWER}`` (``steper_ray.serve.service``'s answer event data), optionally with
        ``"timing": {"search_ms", "generate_ms"}`` (the loop's time in retrieval and in the engine),
        or ``{"failure": {"kind", "message"}}``."""
        ...

    def stream(self, question: str, settings: AnswerSettings) -> AsyncIterator[dict[str, Any]]:
        """The loop's events; a failure is a last ``{"event": "error", "data": {"kind", "message"}}``."""
        ...


def server_timing(answer: dict[str, Any], timing: dict[str, float] | None) -> str:
    """The ``Server-Timing`` header of an answered request (W3C Server Timing; durations in ms):
    ``loop`` (the reasoning loop, the answer's ``latency_ms``) and, where the backend reports
    them, ``search`` and ``generate`` (its time in retrieval and in the engine, all steps). The
    rest of a client's latency is the HTTP path (proxy, ingress, the call to the reasoner)."""
    parts = [f'loop;dur={answer["latency_ms"]};desc="reasoning loop"']
    if timing:
        parts += [f'search;dur={timing["search_ms"]};desc="retrieval over all steps"',
                  f'generate;dur={timing["generate_ms"]};desc="engine over all steps"']
    return ", ".join(parts)


# declared on the 200 of the routes that answer whole (server_timing)
SERVER_TIMING_HEADER = {"Server-Timing": {
    "description": "Where the request's time went (W3C Server Timing, ms): loop, search, generate.",
    "schema": {"type": "string"}}}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_data(schema: dict[str, Any]) -> dict[str, Any]:
    """An SSE event's ``data``: JSON text holding ``schema``."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


# Each server-sent event, as schemathesis and OpenAPI 3.1 read an event-stream's schema.
ANSWER_EVENTS = {"text/event-stream": {"schema": {"oneOf": [
    {"type": "object", "required": ["event", "data"],
     "properties": {"event": {"const": name}, "data": _json_data(_ref(model))}}
    for name, model in (("step", "StepOut"), ("answer", "AnswerResponse"), ("error", "StreamError"))]}}}
CHUNK_EVENTS = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        _json_data({"anyOf": [_ref("ChatCompletionChunk"), _ref("OpenAIErrorResponse")]})]}}}}}
EVENTS = {"/v1/answer/stream": ANSWER_EVENTS, "/v1/chat/completions": CHUNK_EVENTS}
SSE_MODELS = (StepOut, AnswerResponse, StreamError, ChatCompletionChunk, ErrorResponse, OpenAIErrorResponse)


def _openai_problem(errors: list[dict[str, Any]], limits: Limits, model_name: str) -> ApiError:
    """A validation failure on the OpenAI API: 404 for an unknown model, else 400 naming the
    first field at fault (all problems in the message)."""
    found = problems(errors, limits)
    for path, _, kind, value in found:
        if path == "model" and kind == "literal_error":
            return model_not_found_error(value, model_name)
    path, _, kind, _ = found[0]
    field = path.split(".", 1)[0]
    if field in UNSUPPORTED and kind != "missing":
        return ApiError(400, f"{field}: {UNSUPPORTED[field]}", field, "unsupported_parameter")
    if kind == "extra_forbidden":
        return ApiError(400, f"unrecognized request argument supplied: {path}", path, "unknown_parameter")
    return ApiError(400, f"invalid request: {problem_list(found)}", path, "invalid_value")


def _json_errors(model: type, statuses: list[int]) -> dict[int | str, dict[str, Any]]:
    """Error responses as application/json whatever the route's own content type (a stream's)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {s: {"description": HTTPStatus(s).phrase, "content": {"application/json": {"schema": ref}}}
            for s in sorted(statuses)}


def build_api(limits: Limits, backend: Backend, *, model_name: str, token: str | None,
              max_body_bytes: int, metrics: EdgeMetrics | None = None) -> Any:
    """The ASGI application: the FastAPI app inside the request guard and the request counter.
    ``token``: the bearer token (None: auth off)."""
    metrics = metrics or NoMetrics()
    started = int(time.time())
    api = FastAPI(
        title="steper-ray",
        description="Multi-step retrieval-augmented question answering by a StepER-distilled student: "
                    "its own API (/v1/answer) and an OpenAI-compatible one (/v1/chat/completions). "
                    f"Request bodies: JSON (UTF-8), at most {max_body_bytes} bytes.",
        version="1",
        default_response_class=SafeJSONResponse,
    )
    AnswerRequest = answer_request_model(limits)
    ChatRequest = chat_request_model(limits, model_name)
    statuses = [400, *([401] if token is not None else []), 413, 415, 422, 500, 503, 504]
    native_errors = _json_errors(ErrorResponse, statuses)
    openai_errors = _json_errors(OpenAIErrorResponse, [404 if s == 422 else s for s in statuses])

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(request.url.path, exc)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = (unknown_route_error(request.method, request.url.path)
               if exc.status_code == 404 and exc.detail == "Not Found" else ApiError(exc.status_code, str(exc.detail)))
        response = error_response(request.url.path, err)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request.url.path, invalid_request(request, exc, limits, model_name))

    @api.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, ApiError(500, f"internal error ({type(exc).__name__})",
                                                         None, "internal"))

    @api.get("/healthz", summary="Liveness of the HTTP ingress")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def settings(body: Any, sampling: Sampling | None = None, timeout_s: float | None = None) -> AnswerSettings:
        return AnswerSettings(
            max_steps=limits.default_steps if body.max_steps is None else body.max_steps,
            k=limits.default_k if body.k is None else body.k,
            timeout_s=limits.max_timeout_s if timeout_s is None else timeout_s,
            sampling=sampling or Sampling())

    async def answered(question: str, s: AnswerSettings, response: Response) -> dict[str, Any]:
        result = await backend.answer(question, s)
        if "failure" in result:
            raise failure_error(result["failure"])
        response.headers["Server-Timing"] = server_timing(result["data"], result.get("timing"))
        return result["data"]

    async def events(question: str, s: AnswerSettings, route: str, openai: bool,
                     writer: ChunkWriter | None = None) -> AsyncIterator[str]:
        """SSE text of the loop's events; always ends with the answer or an error event."""
        try:
            async for event in backend.stream(question, s):
                kind, data = event["event"], event["data"]
                if kind == "error":
                    err = failure_error(data)
                    if err.status in (503, 504):
                        metrics.failure(route, err.status)
                    yield stream_error_event(err, openai) + (DONE if openai else "")
                    return
                if writer is not None:
                    yield writer.step(data) if kind == "step" else writer.answer(data)
                else:
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        except Exception as exc:  # noqa: BLE001 - a stream ends with an error event, never cut off
            log.exception("stream failed")
            err = ApiError(500, f"internal error ({type(exc).__name__})", None, "internal")
            yield stream_error_event(err, openai) + (DONE if openai else "")

    @api.post("/v1/answer", response_model=AnswerResponse,
              responses={200: {"headers": SERVER_TIMING_HEADER}, **native_errors},
              summary="Answer a question with the step-wise retrieve-and-reason loop")
    async def answer(body: AnswerRequest, response: Response) -> Any:  # type: ignore[valid-type]
        s = settings(body, timeout_s=body.timeout_s)
        return await answered(body.question.strip(), s, response)

    @api.post("/v1/answer/stream", response_class=EventStreamResponse,
              responses={200: {"content": ANSWER_EVENTS, "description": "Events: 'step' (one per step), then "
                               "'answer' (the whole response) or 'error' ({status, detail})."},
                         **native_errors},
              summary="The same, as server-sent events: one 'step' event per step, then 'answer'")
    async def answer_stream(request: Request, body: AnswerRequest) -> Any:  # type: ignore[valid-type]
        s = settings(body, timeout_s=body.timeout_s)
        return EventStreamResponse(events(body.question.strip(), s, route_of(request.scope), False))

    card = ModelCard(id=model_name, created=started).model_dump()

    @api.get("/v1/models", response_model=ModelList, responses=openai_errors,
             summary="OpenAI-compatible: the served model")
    async def models() -> Any:
        return {"object": "list", "data": [card]}

    @api.get("/v1/models/{model}", response_model=ModelCard, responses=openai_errors,
             summary="OpenAI-compatible: one model (the served one, else 404)")
    async def model(model: str) -> Any:
        if model != model_name:
            raise model_not_found_error(model, model_name)
        return card

    @api.post("/v1/chat/completions", response_model=ChatCompletion,
              responses={200: {"content": CHUNK_EVENTS, "headers": SERVER_TIMING_HEADER,
                               "description": "A chat.completion (with a Server-Timing header), or with "
                               "stream: true chat.completion.chunk events then [DONE]."}, **openai_errors},
              summary="OpenAI-compatible: the last user message answered by the step-wise loop")
    async def chat_completions(request: Request, body: ChatRequest, response: Response) -> Any:  # type: ignore[valid-type]
        s = settings(body, sampling_of(body))
        question = question_of(body)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            writer = ChunkWriter(model_name, include_usage)
            return EventStreamResponse(events(question, s, route_of(request.scope), True, writer))
        return completion_body(await answered(question, s, response), model_name)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description,
                                 routes=api.routes)
            _, defs = models_json_schema([(m, "serialization") for m in SSE_MODELS],
                                         ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs["$defs"])
            for path, ops in schema["paths"].items():
                for op in ops.values():
                    responses = op.get("responses", {})
                    if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                        del responses["422"]  # FastAPI's own 422 body, which this API never sends
                    if path in EVENTS:  # as declared (FastAPI merges its own {"type": "string"} in)
                        responses["200"]["content"]["text/event-stream"] = EVENTS[path]["text/event-stream"]
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            if token is not None:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearerAuth": {"type": "http", "scheme": "bearer",
                                   "description": "Authorization: Bearer <token> (serve.auth_token_env)"}}
                for path, ops in schema["paths"].items():
                    if path.startswith("/v1/"):
                        for op in ops.values():
                            op["security"] = [{"bearerAuth": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return CountRequests(RequestGuard(api, token, max_body_bytes, model_name), metrics)


def invalid_request(request: Request, exc: RequestValidationError, limits: Limits, model_name: str) -> ApiError:
    """The ApiError of a body FastAPI could not validate: not sent as JSON 415, not JSON 400,
    else every problem at once (422 on the steper API, 400 on the OpenAI API)."""
    content_type = request.headers.get("content-type", "")
    if not is_json_content_type(content_type):
        sent = f"this one is {clipped(repr(content_type))}" if content_type else "this one has none"
        return ApiError(415, "the request body must be JSON sent with 'Content-Type: application/json' "
                             f"({sent}); e.g. curl -H 'Content-Type: application/json' "
                             f"-d '{example_body(request.url.path, model_name)}'", None, "unsupported_media_type")
    errors = list(exc.errors())
    openai = is_openai_path(request.url.path)
    status = 400 if openai else 422
    invalid = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid:  # the guard's strict parse refuses these first; kept for a body it did not see
        return not_json_error(request.url.path, model_name, str(invalid[0].get("ctx", {}).get("error", "syntax")))
    at_body = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    names = [e for e in at_body if e.get("type") == "string_unicode" and isinstance(e.get("input"), str)]
    if names:  # pydantic reports a field name that is not valid Unicode at the body itself
        return ApiError(status, f"invalid request: a field name {surrogate_problem(names[0]['input'])}", None,
                        "invalid_value")
    whole = [e for e in at_body if e.get("type") != "string_unicode"]
    if whole:  # JSON, but not an object: null (FastAPI reads it as no body), a string, an array, ...
        sent = whole[0].get("input")
        kind = {type(None): "null", str: "a string", list: "an array", bool: "a boolean", int: "a number",
                float: "a number"}.get(type(sent), "not an object")
        return ApiError(status, f"the request body must be a JSON object (this one is {kind}); "
                        f"send e.g. {example_body(request.url.path, model_name)}", None, "invalid_value")
    if openai:
        return _openai_problem(errors, limits, model_name)
    found = problems(errors, limits)
    return ApiError(422, f"invalid request: {problem_list(found)}", found[0][0] if found else None, "invalid_value")

"""Errors at the HTTP edge, in one place: every failure becomes an ``ApiError`` (status,
message, the request field at fault, a machine-readable code) and is rendered in the shape of
the API it belongs to:

- the steper API (``/v1/answer``, ``/v1/answer/stream``, ...): ``{"detail": message}``;
- the OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``, and any other ``/v1/``
  path, which an OpenAI client may call): ``{"error": {"message", "type", "param", "code"}}``,
  as OpenAI's API and the ``openai`` SDK (``APIStatusError.body``) have it.

Failure kinds of the reasoner (``steper_ray.serve.service.failure_of``) map to statuses here:
'unavailable' 503, 'timeout' 504, 'internal' 500. In a stream that has begun, the same error
is the last event instead (``stream_error_event``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

FAILURE_STATUS = {"unavailable": 503, "timeout": 504, "internal": 500}
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")


class ApiError(Exception):
    """A request that gets ``status``: ``message`` says what to change; ``param`` names the
    request field at fault (None: the request as a whole); ``code`` is a stable identifier."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def failure_error(failure: dict[str, str]) -> ApiError:
    """The ApiError of a reasoner failure ``{"kind", "message"}``."""
    kind = failure.get("kind", "internal")
    return ApiError(FAILURE_STATUS.get(kind, 500), failure.get("message", "internal error"), None, kind)


def is_openai_path(path: str) -> bool:
    """Whether a request path (with or without the application's route prefix) is an
    OpenAI-compatible route, whose errors take OpenAI's shape: also any other ``/v1/`` path that
    is not the steper API's (an OpenAI client calling a route this server lacks, /v1/completions)."""
    path = path.rstrip("/")
    if path.endswith(OPENAI_PATHS):
        return True
    _, v1, rest = path.partition("/v1/")
    return bool(v1) and rest.split("/", 1)[0] != "answer"


def model_not_found_error(model: Any, model_name: str) -> ApiError:
    """The 404 of a ``model`` other than the served ``model_name`` (OpenAI's ``model_not_found``)."""
    return ApiError(404, f"the model {clipped(repr(model))} does not exist; this server serves {model_name!r} "
                         "(GET /v1/models)", "model", "model_not_found")


def unknown_route_error(method: str, path: str) -> ApiError:
    """The 404 of a path no route serves, worded as OpenAI's own ("Invalid URL (POST /v1/...)")
    and naming the routes this server has."""
    return ApiError(404, f"Invalid URL ({method} {clipped(path)}): this server serves POST /v1/chat/completions and "
                         "GET /v1/models[/{model}] (OpenAI-compatible), POST /v1/answer and POST /v1/answer/stream",
                    None, "unknown_url")


def clipped(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was: a message that quotes a
    client's input (a field name, a model, a value) stays small whatever the client sent."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def example_body(path: str, model_name: str) -> str:
    """A valid request body for the API of ``path``, for error messages."""
    return (f'{{"model": "{model_name}", "messages": [{{"role": "user", "content": "Who directed Jaws?"}}]}}'
            if is_openai_path(path) else '{"question": "Who directed Jaws?"}')


def not_json_error(path: str, model_name: str, reason: str) -> ApiError:
    """The 400 for a body sent as JSON that is not JSON (RFC 8259): ``reason`` says why, and the
    message shows a valid body for the route's API."""
    return ApiError(400, f"the request body is not valid JSON ({reason}); send e.g. {example_body(path, model_name)}",
                    None, "invalid_json")


def openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error_body(err: ApiError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": openai_type(err.status), "param": err.param,
                      "code": err.code}}


class SafeJSONResponse(JSONResponse):
    """JSON as UTF-8; text that UTF-8 cannot carry (a lone surrogate echoed from a request)
    is written as a JSON escape instead of failing the response."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(path: str, err: ApiError) -> JSONResponse:
    """The response for ``err`` on a request to ``path``, in that API's shape."""
    body = openai_error_body(err) if is_openai_path(path) else {"detail": err.message}
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return SafeJSONResponse(body, status_code=err.status, headers=headers)


def stream_error_event(err: ApiError, openai: bool) -> str:
    """The server-sent event that ends a stream which failed after it began: OpenAI's
    ``data: {"error": {...}}`` (the SDK raises it as an APIError), or the steper stream's
    ``event: error`` with ``{"status", "detail"}``."""
    if openai:
        return f"data: {json.dumps(openai_error_body(err))}\n\n"
    return f"event: error\ndata: {json.dumps({'status': err.status, 'detail': err.message})}\n\n"


class ErrorResponse(BaseModel):
    """The steper API's error body."""

    detail: str = Field(description="What went wrong and what to change.")


class OpenAIErrorInfo(BaseModel):
    message: str = Field(description="What went wrong and what to change.")
    type: str = Field(description="invalid_request_error, authentication_error or server_error.")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="A stable identifier of the error.")


class OpenAIErrorResponse(BaseModel):
    """The OpenAI-compatible API's error body."""

    error: OpenAIErrorInfo

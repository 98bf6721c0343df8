"""ASGI middleware that runs before the app reads a request body, in this order:

1. bearer auth on ``/v1/*`` (when a token is configured): ``Authorization: Bearer <token>``, the
   scheme in any letter case (RFC 7235), checked before the body is read, so a request without
   the token gets 401 whatever its body;
2. the body-size limit: a ``Content-Length`` over ``max_body_bytes`` is refused at once, a body
   that grows past it while being read is cut off there: 413;
3. a JSON body that is not valid UTF-8, or not JSON as RFC 8259 has it: 400. Python's own
   reader (FastAPI's) takes ``NaN`` and ``Infinity``, and a body nested past its recursion
   limit gets FastAPI's generic parse error; both are refused here as invalid JSON instead.

The body read here is handed on to the app as it came. Errors take the route's shape
(``steper_ray.serve.errors``).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from steper_ray.serve.errors import ApiError, error_response, not_json_error

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def relative_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def is_json_content_type(value: str) -> bool:
    """application/json (any parameters, e.g. charset) or an application/*+json type: the
    content types FastAPI parses a body from."""
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def json_problem(text: str) -> str | None:
    """Why ``text`` is not one JSON value as RFC 8259 defines it (None: it is one), e.g.
    "Expecting value at line 1 column 5", "NaN is not a JSON number", "nested too deeply"."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        return "nested too deeply"
    except ValueError as exc:
        return str(exc)
    return None


def bearer_ok(header: str, token: str) -> bool:
    """Whether an Authorization header value carries ``token`` with the Bearer scheme (any case)."""
    scheme, _, credentials = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


class RequestGuard:
    """The middleware above around ``app``: ``token`` the bearer token (None: auth off),
    ``max_body_bytes`` the body limit, ``model_name`` the served model (for the example body
    in an invalid-JSON error)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str | None,
                 max_body_bytes: int, model_name: str):
        self.app, self.token, self.max_body_bytes, self.model_name = app, token, max_body_bytes, model_name

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: ApiError) -> None:
        await error_response(scope.get("path", ""), err)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and relative_path(scope).startswith("/v1/"):
            if not bearer_ok(headers.get("authorization", ""), self.token):
                await self._refuse(scope, receive, send, ApiError(
                    401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'", None, "invalid_api_key"))
                return
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(scope, receive, send, ApiError(400, f"invalid Content-Length {declared!r}",
                                                                  None, "invalid_request"))
                return
            if int(declared) > self.max_body_bytes:
                await self._refuse(scope, receive, send, self._too_large(int(declared)))
                return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._refuse(scope, receive, send, self._too_large(None))
                return
        if is_json_content_type(headers.get("content-type", "")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await self._refuse(scope, receive, send, ApiError(
                    400, f"the request body is not valid UTF-8 (byte {exc.start}); JSON must be sent as UTF-8",
                    None, "invalid_encoding"))
                return
            # parsed twice (here, then by FastAPI): under 1 ms for a 1 MB body, next to seconds a step.
            # An empty body is left to FastAPI, which says the body is missing; a leading byte-order
            # mark is ignored, as RFC 8259 allows and FastAPI's reader does
            if text.strip() and (reason := json_problem(text.removeprefix("\ufeff"))) is not None:
                await self._refuse(scope, receive, send, not_json_error(relative_path(scope), self.model_name, reason))
                return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> ApiError:
        what = f"is {size} bytes" if size is not None else "goes on"
        return ApiError(413, f"the request body {what}, over the limit of {self.max_body_bytes} bytes "
                             "(serve.max_body_bytes)", None, "request_too_large")

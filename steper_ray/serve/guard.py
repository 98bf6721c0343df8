"""ASGI middleware that runs before the app reads a request body, in this order:

1. bearer auth on ``/v1/*`` (when a token is configured): ``Authorization: Bearer <token>``, the
   scheme in any letter case (RFC 7235), checked before the body is read, so a request without
   the token gets 401 whatever its body;
2. the body-size limit: a ``Content-Length`` over ``max_body_bytes`` is refused at once, a body
   that grows past it while being read is cut off there: 413;
3. a JSON body FastAPI could not read as meant (``body_problem``): a charset other than UTF-8
   415; not valid UTF-8, or not JSON as RFC 8259 has it, empty included, 400. Python's own
   reader (FastAPI's) takes ``NaN`` and ``Infinity``, and a body nested past its recursion
   limit or holding an integer past its digit limit gets FastAPI's generic parse error; all are
   refused here with the reason instead.

The body read here is handed on to the app as it came. Errors take the route's shape
(``steper_ray.serve.errors``).
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from steper_ray.serve.errors import ApiError, clipped, error_response, not_json_error

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


class _TooLong(ValueError):
    pass


def _int_within_limit(digits: str) -> int:
    # Python refuses to read an integer of more than sys.get_int_max_str_digits() digits (CVE-2020-10735)
    if len(digits.lstrip("-")) > sys.get_int_max_str_digits():
        raise _TooLong(f"holds an integer of {len(digits.lstrip('-'))} digits; this server reads at most "
                       f"{sys.get_int_max_str_digits()}")
    return int(digits)


def json_problem(text: str) -> str | None:
    """Why ``text`` is not one JSON value as RFC 8259 defines it (None: it is one), e.g.
    "Expecting value at line 1 column 5", "NaN is not a JSON number", "nested too deeply",
    "it is empty".
    Raises ValueError for valid JSON that Python cannot read (an integer past its digit limit)."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    if not text.strip():
        return "it is empty"
    try:
        json.loads(text, parse_constant=constant, parse_int=_int_within_limit)
    except _TooLong:
        raise
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unexpected UTF-8 BOM"):  # a second one: the first was removed
            return "a second byte-order mark (U+FEFF) at the start"
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        return "nested too deeply"
    except ValueError as exc:
        return str(exc)
    return None


def body_problem(body: bytes, content_type: str, path: str, model_name: str) -> ApiError | None:
    """The 4xx for a body sent as JSON (``content_type`` one FastAPI parses) that the API cannot
    read, None if it can: a charset other than UTF-8 415, bytes that are not UTF-8 or text that
    is not JSON (empty included) 400, an integer longer than Python reads 400. A leading
    byte-order mark is ignored, as RFC 8259 allows and FastAPI's reader does."""
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in content_type.split(";")[1:]
                    if p.strip().lower().startswith("charset=")), "utf-8")
    if charset not in ("utf-8", "utf8"):
        return ApiError(415, f"JSON must be sent as UTF-8 (RFC 8259); this body declares charset={clipped(charset)}: "
                             "send it as UTF-8 with 'Content-Type: application/json'", None, "unsupported_media_type")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ApiError(400, f"the request body is not valid UTF-8 (byte {exc.start}); JSON must be sent as UTF-8",
                        None, "invalid_encoding")
    try:
        reason = json_problem(text.removeprefix("\ufeff"))
    except _TooLong as exc:
        return ApiError(400, f"the request body {exc}", None, "invalid_value")
    return None if reason is None else not_json_error(path, model_name, reason)


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
        content_type = headers.get("content-type", "")
        if is_json_content_type(content_type):
            # parsed twice (here, then by FastAPI): under 1 ms for a 1 MB body, next to seconds a step
            problem = body_problem(body, content_type, relative_path(scope), self.model_name)
            if problem is not None:
                await self._refuse(scope, receive, send, problem)
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

"""The HTTP surface (FastAPI behind Serve): POST /v1/answer, POST /v1/answer/stream (server-sent
events), GET /healthz, and the OpenAPI schema at /openapi.json (docs at /docs).

Every user mistake is a 4xx with a message that says what to change (a body not sent as JSON:
415); a down retriever is 503 and a request over its time limit is 504. Bearer auth is on when
the configured environment variable is set on the serving node."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from steper_ray.config import ServeConfig

log = logging.getLogger(__name__)


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The question, in plain text.")
    max_steps: int | None = Field(None, description="Most reasoning steps (default: the server's reasoning.max_steps).")
    k: int | None = Field(None, description="Passages retrieved per step (default: the server's retrieval.k).")
    timeout_s: float | None = Field(None, description="Give up after this many seconds (504); at most the server's limit.")


class PassageOut(BaseModel):
    id: str
    title: str


class StepOut(BaseModel):
    step: int
    task: str = Field(description="init, exp or agg.")
    query: str = Field(description="What was retrieved with at this step.")
    passages: list[PassageOut]
    reasoning: str = Field(description="The sentence the model wrote at this step.")


class AnswerResponse(BaseModel):
    answer: str | None = Field(description="The final answer; null when the model never gave one.")
    steps: list[StepOut]
    latency_ms: float
    error: str | None = Field(None, description="Why no answer was produced (e.g. an over-long prompt).")


class ErrorResponse(BaseModel):
    detail: str


api = FastAPI(
    title="steper-ray",
    description="Multi-step retrieval-augmented question answering by a StepER-distilled student.",
    version="1",
)


def is_json_content_type(value: str) -> bool:
    """application/json (any parameters, e.g. charset) or an application/*+json type: the
    content types FastAPI parses a body from."""
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI parses no body sent without a JSON content type (curl -d sends a form), and the
    # validation error that follows would not say why.
    content_type = request.headers.get("content-type", "")
    if not is_json_content_type(content_type):
        sent = f"this one is {content_type!r}" if content_type else "this one has none"
        return JSONResponse({"detail": f"the request body must be JSON sent with 'Content-Type: "
                                       f"application/json' ({sent}); e.g. curl -H 'Content-Type: "
                                       """application/json' -d '{"question": "..."}'"""},
                            status_code=415)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "the request body is not valid JSON; send e.g. "
                                       '{"question": "Who directed Jaws?"}'}, status_code=400)
    problems = []
    for e in errors:
        loc = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
        problems.append(f"{loc}: {e['msg']}")
    return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422)


_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 415, 422, 503, 504)
}


@serve.deployment(name="ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, reasoner: Any, serve_cfg: dict[str, Any], default_steps: int, default_k: int):
        self.reasoner = reasoner  # DeploymentHandle of ReasonerDeployment
        self.cfg = ServeConfig(**serve_cfg)
        self.default_steps = min(default_steps, self.cfg.max_steps)
        self.default_k = min(default_k, self.cfg.max_k)
        self.token = os.environ.get(self.cfg.auth_token_env or "") or None
        log.info("ingress up; bearer auth %s", "on" if self.token else "off")

    def _check(self, request: Request, body: AnswerRequest) -> tuple[JSONResponse | None, tuple[str, int, int, float]]:
        if self.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return JSONResponse({"detail": "missing or wrong bearer token; send 'Authorization: Bearer <token>'"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"}), ("", 0, 0, 0.0)
        c = self.cfg
        problems = []
        question = body.question.strip()
        if not question:
            problems.append("question: is empty; send the question text")
        elif len(question) > c.max_question_chars:
            problems.append(f"question: has {len(question)} characters, over the limit of {c.max_question_chars}")
        steps = self.default_steps if body.max_steps is None else body.max_steps
        if not 2 <= steps <= c.max_steps:
            problems.append(f"max_steps: must be between 2 and {c.max_steps}, got {steps}")
        k = self.default_k if body.k is None else body.k
        if not 1 <= k <= c.max_k:
            problems.append(f"k: must be between 1 and {c.max_k}, got {k}")
        timeout = c.request_timeout_s if body.timeout_s is None else body.timeout_s
        if not 0 < timeout <= c.request_timeout_s:
            problems.append(f"timeout_s: must be above 0 and at most {c.request_timeout_s:g}, got {timeout:g}")
        if problems:
            return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422), ("", 0, 0, 0.0)
        return None, (question, steps, k, timeout)

    @api.get("/healthz", summary="Liveness of the HTTP ingress")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/v1/answer", response_model=AnswerResponse, responses=_ERRORS,
              summary="Answer a question with the step-wise retrieve-and-reason loop")
    async def answer(self, request: Request, body: AnswerRequest) -> Any:
        t0 = time.perf_counter()
        error, (question, steps, k, timeout) = self._check(request, body)
        if error is not None:
            return error
        call = self.reasoner.answer.remote(question, steps, k, timeout)
        try:
            # the reasoner enforces the deadline itself; this is the backstop if it is stuck
            result = await asyncio.wait_for(call, timeout + 2.0)
        except asyncio.TimeoutError:
            call.cancel()
            return JSONResponse({"detail": f"the request took longer than {timeout:g} s"}, status_code=504)
        if "error_status" in result:
            return JSONResponse({"detail": result["detail"]}, status_code=result["error_status"])
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return result

    @api.post("/v1/answer/stream", responses=_ERRORS,
              summary="The same, as server-sent events: one 'step' event per step, then 'answer'",
              response_class=StreamingResponse)
    async def answer_stream(self, request: Request, body: AnswerRequest) -> Any:
        error, (question, steps, k, timeout) = self._check(request, body)
        if error is not None:
            return error
        gen = self.reasoner.options(stream=True).stream.remote(question, steps, k, timeout)

        async def events() -> AsyncIterator[str]:
            async for event in gen:
                yield f"event: {event['event']}\ndata: {json.dumps(event['data'])}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

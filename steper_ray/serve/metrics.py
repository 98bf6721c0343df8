"""Application metrics of the endpoint, through Ray Serve's metrics API (``ray.serve.metrics``):
each replica records its own, Ray's metrics agent on every node exports them on Ray's Prometheus
endpoint (``ray_`` prefix, counters with ``_total``, histograms as ``_bucket`` / ``_sum`` /
``_count``), each tagged with the Serve ``application``, ``deployment`` and ``replica``.

===================================  ===============  =============================================
metric (as Prometheus shows it)      tags             what
===================================  ===============  =============================================
ray_steper_requests_total            route, status    HTTP requests by route and status (every
                                                      response, 401/413/4xx included; a stream
                                                      that fails after it began counts as 200)
ray_steper_timeouts_total            route            requests over their time limit (504, or the
                                                      stream's error event)
ray_steper_unavailable_total         route            requests answered 503 (the retriever down
                                                      or slow), in a stream or not
ray_steper_steps_per_request         -                histogram: steps of each finished request
ray_steper_retrieval_latency_ms      -                histogram: each step's retrieval, ms
ray_steper_generation_latency_ms     -                histogram: each step's generation (its
                                                      retries included), ms
ray_steper_tokens_generated_total    -                tokens generated (every step and retry)
ray_steper_prompt_tokens_total       -                prompt tokens over every generation call
===================================  ===============  =============================================

With ``serve.model.kind: vllm`` the engine exports its own statistics as ``ray_vllm_*`` (see
``AsyncVLLMGenerator``). Routes are the API's paths (``/v1/answer``, ``/v1/answer/stream``,
``/v1/chat/completions``, ``/v1/models``, ``/v1/models/{model}`` for every model name asked
for, ``/healthz``, ...; anything else is ``other``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from steper_ray.reasoning.async_loop import LoopStats

log = logging.getLogger(__name__)

LATENCY_BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
# Ray exports a histogram's sum rebuilt from bucket midpoints (ray/_private/telemetry/
# open_telemetry_metric_recorder.py, record_histogram_aggregated_batch), so a bucket per whole
# number of steps, centred on it, keeps the steps' sum (and mean) exact: 3 steps land in
# (2.5, 3.5], midpoint 3. With integer bounds four 3-step requests summed to 10.
STEP_BUCKETS = [n + 0.5 for n in range(17)]
ROUTES = ("/v1/answer", "/v1/answer/stream", "/v1/chat/completions", "/v1/models", "/healthz",
          "/openapi.json", "/docs")


class EdgeMetrics(Protocol):
    def request(self, route: str, status: int) -> None: ...

    def failure(self, route: str, status: int) -> None: ...


class NoMetrics:
    """Records nothing (the API without Ray, in unit tests)."""

    def request(self, route: str, status: int) -> None:
        pass

    def failure(self, route: str, status: int) -> None:
        pass

    def loop(self, stats: LoopStats, steps: int) -> None:
        pass


class IngressMetrics:
    """The HTTP edge's metrics (in the ingress replica)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter("steper_requests", description="HTTP requests by route and status.",
                                        tag_keys=("route", "status"))
        self.timeouts = metrics.Counter("steper_timeouts", description="Requests over their time limit.",
                                        tag_keys=("route",))
        self.unavailable = metrics.Counter("steper_unavailable", description="Requests answered 503.",
                                           tag_keys=("route",))

    def request(self, route: str, status: int) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})

    def failure(self, route: str, status: int) -> None:
        """A 503 or 504, as a response status or as a stream's error event."""
        if status == 504:
            self.timeouts.inc(tags={"route": route})
        elif status == 503:
            self.unavailable.inc(tags={"route": route})


class LoopMetrics:
    """The reasoning loop's metrics (in the reasoner replica)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.steps = metrics.Histogram("steper_steps_per_request", description="Steps of each finished request.",
                                       boundaries=STEP_BUCKETS)
        self.retrieval = metrics.Histogram("steper_retrieval_latency_ms", description="Retrieval of one step, ms.",
                                           boundaries=LATENCY_BUCKETS_MS)
        self.generation = metrics.Histogram("steper_generation_latency_ms",
                                            description="Generation of one step (retries included), ms.",
                                            boundaries=LATENCY_BUCKETS_MS)
        self.tokens = metrics.Counter("steper_tokens_generated", description="Tokens generated.")
        self.prompt_tokens = metrics.Counter("steper_prompt_tokens",
                                             description="Prompt tokens over every generation call.")

    def loop(self, stats: LoopStats, steps: int | None) -> None:
        """One request's loop; ``steps`` None when it did not finish (its timings still count)."""
        for ms in stats.search_ms:
            self.retrieval.observe(ms)
        for ms in stats.generate_ms:
            self.generation.observe(ms)
        if stats.completion_tokens:
            self.tokens.inc(stats.completion_tokens)
        if stats.prompt_tokens:
            self.prompt_tokens.inc(stats.prompt_tokens)
        if steps is not None:
            self.steps.observe(steps)


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The metric's route tag of an ASGI request: its path without the application's prefix."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    path = path.rstrip("/") or "/"
    if path.startswith("/v1/models/") and path.count("/") == 3:
        return "/v1/models/{model}"  # one tag for every model name asked for
    return path if path in ROUTES else "other"


ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class CountRequests:
    """ASGI middleware: counts every HTTP response by route and status (the outermost layer, so
    that requests refused before the app sees them are counted too)."""

    def __init__(self, app: ASGIApp, metrics: EdgeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope)
        counted = False

        async def counting_send(message: Any) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                counted = True
                status = int(message["status"])
                try:
                    self.metrics.request(route, status)
                    if status in (503, 504):
                        self.metrics.failure(route, status)
                except Exception:  # noqa: BLE001 - metrics never fail a request
                    log.exception("recording a request metric failed")
            await send(message)

        await self.app(scope, receive, counting_send)

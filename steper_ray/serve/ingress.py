"""The HTTP ingress deployment: the API of ``steper_ray.serve.api`` over the reasoner
deployment's handle. The app is built in the replica (``__serve_build_asgi_app__``) from the
config, so the OpenAPI schema carries this server's limits and, when the token variable is set
on the serving node, its bearer security scheme."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from steper_ray.config import ServeConfig
from steper_ray.serve.api import build_api
from steper_ray.serve.metrics import IngressMetrics
from steper_ray.serve.schemas import Limits
from steper_ray.serve.service import AnswerSettings, failure_of

log = logging.getLogger(__name__)

GRACE_S = 2.0  # the reasoner enforces each deadline; the ingress gives up this much later


def _handle_failure(exc: BaseException, timeout_s: float) -> dict[str, str]:
    """A failed handle call: the reasoner replica gone, not deployed or refusing work (its
    queue full: BackPressureError) is 'unavailable'."""
    from ray.exceptions import RayError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, (BackPressureError, DeploymentUnavailableError)) or (
            isinstance(exc, RayError) and not isinstance(exc, RayTaskError)):
        return {"kind": "unavailable", "message": f"the reasoner deployment is unavailable ({type(exc).__name__}); "
                                                  "retry later"}
    return failure_of(exc, timeout_s)


class ReasonerBackend:
    """The API's Backend over the reasoner deployment's handle, with a backstop deadline in
    case a reasoner replica is stuck."""

    def __init__(self, handle: Any):
        self.handle = handle

    async def answer(self, question: str, settings: AnswerSettings) -> dict[str, Any]:
        call = self.handle.answer.remote(question, settings)
        try:
            async with asyncio.timeout(settings.timeout_s + GRACE_S):
                result: dict[str, Any] = await call
                return result
        except Exception as exc:  # noqa: BLE001 - mapped to a failure kind
            call.cancel()
            return {"failure": _handle_failure(exc, settings.timeout_s)}

    async def stream(self, question: str, settings: AnswerSettings) -> AsyncIterator[dict[str, Any]]:
        gen = self.handle.options(stream=True).stream.remote(question, settings)
        deadline = asyncio.get_running_loop().time() + settings.timeout_s + GRACE_S
        try:
            while True:
                async with asyncio.timeout_at(deadline):
                    try:
                        event = await gen.__anext__()
                    except StopAsyncIteration:
                        return
                yield event
        except Exception as exc:  # noqa: BLE001 - the stream ends with an error event
            gen.cancel()
            yield {"event": "error", "data": _handle_failure(exc, settings.timeout_s)}


@serve.deployment(name="ingress")
@serve.ingress()
class Ingress:
    def __init__(self, reasoner: Any, serve_cfg: dict[str, Any], default_steps: int, default_k: int,
                 max_tokens: int):
        self.backend = ReasonerBackend(reasoner)  # over the DeploymentHandle of ReasonerDeployment
        self.cfg = ServeConfig(**serve_cfg)
        self.limits = Limits.of(self.cfg, default_steps, default_k, max_tokens)
        self.token = os.environ.get(self.cfg.auth_token_env or "") or None
        log.info("ingress up; bearer auth %s", "on" if self.token else "off")

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self.limits, self.backend, model_name=self.cfg.openai_model, token=self.token,
                         max_body_bytes=self.cfg.max_body_bytes, metrics=IngressMetrics())

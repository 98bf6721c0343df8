"""OpenAIGenerator: any OpenAI-compatible endpoint (e.g. a vLLM server hosting a 70B teacher)
through the official ``openai`` SDK: its timeouts, its retries with exponential backoff (on
connection errors, 408, 409, 429 and 5xx; never on other 4xx) and its async client, with at
most ``concurrency`` requests in flight.

Completion-format prompts go to ``/v1/completions``. Chat-format prompts go to
``/v1/chat/completions`` as messages whose last one is the unfinished assistant turn (the
reasoning so far); vLLM's server continues that turn with ``continue_final_message`` (sent
with ``add_generation_prompt: false``). ``min_tokens`` of a retry is vLLM's extension too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from steper_ray.reasoning.generators.protocol import FinishReason, Generation, GenRequest, failed
from steper_ray.reasoning.prompts import COMPLETION_END

log = logging.getLogger(__name__)

# What the SDK retries (openai._base_client._should_retry): connection errors, 408, 409, 429, 5xx.
RETRIED_STATUS = {408, 409, 429}


def _finish(reason: str | None, extra: dict[str, Any] | None) -> FinishReason:
    """OpenAI's finish_reason, with vLLM's ``stop_reason`` telling the newline from EOS."""
    if reason == "length":
        return "length"
    extra = extra or {}
    if "stop_reason" in extra and extra["stop_reason"] is None:
        return "eos"
    return "stop"


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 16,
    ):
        import openai

        key = os.environ.get(api_key_env) if api_key_env else None
        self.model = model
        self.max_tokens, self.temperature, self.top_p, self.seed = max_tokens, temperature, top_p, seed
        self.max_retries = max_retries
        self.concurrency = concurrency
        # The async client lives on a private event loop thread: callers on any thread (or on
        # their own event loop, via agenerate) share one connection pool.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-client", daemon=True)
        self._thread.start()
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=key or "EMPTY", timeout=timeout_s,
                                         max_retries=max_retries)
        self._gate: asyncio.Semaphore | None = None

    def _error(self, exc: Exception) -> Generation:
        import openai

        attempts = f"gave up after {self.max_retries + 1} attempts"
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            body = (exc.response.text or "")[:200]
            if status in RETRIED_STATUS or status >= 500:
                return failed(f"{attempts}: HTTP {status}: {body}")
            return failed(f"HTTP {status}: {body}")  # a client error does not improve with retries
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return failed(f"{attempts}: {type(cause).__name__}: {cause}")
        if isinstance(exc, (IndexError, AttributeError, TypeError)):
            return failed(f"malformed response: {type(exc).__name__}: {exc}")
        # e.g. a lone surrogate in the prompt, which a UTF-8 request body cannot carry
        return failed(f"request failed: {type(exc).__name__}: {exc}")

    async def _one(self, req: GenRequest) -> Generation:
        assert self._gate is not None
        temperature = self.temperature if req.temperature is None else req.temperature
        common: dict[str, Any] = {
            "model": self.model, "max_tokens": self.max_tokens if req.max_tokens is None else req.max_tokens,
            "temperature": temperature, "top_p": self.top_p, "stop": [COMPLETION_END],
            "seed": self.seed if req.seed is None else req.seed,
        }
        extra: dict[str, Any] = {"min_tokens": min(req.min_tokens, common["max_tokens"])} if req.min_tokens else {}
        async with self._gate:
            try:
                if req.messages is None:
                    resp = await self.client.completions.create(prompt=req.prompt, extra_body=extra or None, **common)
                    choice = resp.choices[0]
                    text = choice.text
                else:
                    extra.update(continue_final_message=True, add_generation_prompt=False)
                    messages = [{"role": role, "content": content} for role, content in req.messages]
                    resp = await self.client.chat.completions.create(messages=messages, extra_body=extra, **common)
                    choice = resp.choices[0]
                    text = choice.message.content or ""
                tokens = int(resp.usage.completion_tokens) if resp.usage else 0
                prompt_tokens = int(resp.usage.prompt_tokens) if resp.usage else 0
                return Generation(text, tokens, None, _finish(choice.finish_reason, choice.model_extra), prompt_tokens)
            except Exception as exc:  # noqa: BLE001 - one request's failure is its own error row
                return self._error(exc)

    async def _all(self, requests: Sequence[GenRequest]) -> list[Generation]:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        return asyncio.run_coroutine_threadsafe(self._all(requests), self._loop).result()

    async def agenerate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """``generate`` for a caller on its own event loop (the client stays on its thread)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._all(requests), self._loop))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

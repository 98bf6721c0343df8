"""OpenAIGenerator: any OpenAI-compatible ``/v1/completions`` endpoint (e.g. a vLLM server
hosting a 70B teacher), with timeouts, retries with exponential backoff and a concurrency cap."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from steper_ray.reasoning.generators.protocol import Generation, GenRequest, first_line
from steper_ray.reasoning.prompts import COMPLETION_END

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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
        backoff_s: float = 1.0,
        concurrency: int = 16,
    ):
        headers = {}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.body = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                     "stop": [COMPLETION_END], "seed": seed}
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers,
                                   limits=httpx.Limits(max_connections=concurrency))

    def _post(self, prompt: str) -> Generation:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, **self.body}
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                # exponential backoff with jitter, so a restarting server is not stampeded
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2))
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:  # timeouts, refused connections
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code != 200:  # a client error will not improve with retries
                return Generation("", 0, f"HTTP {resp.status_code}: {resp.text[:200]}")
            try:
                data = resp.json()
                text = data["choices"][0]["text"]
                tokens = int((data.get("usage") or {}).get("completion_tokens", 0))
            except (ValueError, KeyError, IndexError, TypeError):
                return Generation("", 0, f"malformed completion response: {resp.text[:200]}")
            return Generation(first_line(text), tokens)
        return Generation("", 0, f"gave up after {self.max_retries + 1} attempts: {last}")

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(requests)))) as pool:
            return list(pool.map(self._post, [r.prompt for r in requests]))

    def close(self) -> None:
        self.client.close()

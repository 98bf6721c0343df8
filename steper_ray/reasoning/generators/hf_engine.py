"""HFGenerator: transformers ``generate`` in batches with left padding (CPU or one GPU).

Stops a step the way vLLM does (so both engines give the same step, tested): at the first
newline written after the first ``min_tokens`` tokens (the text is cut before it), at
end-of-sequence (never within ``min_tokens``), or at ``max_tokens``.

Requests are grouped by their settings (min_tokens, temperature, max_tokens, seed), one
``generate`` call per group and batch. A request whose prompt cannot be tokenised, or a batch
that fails, costs only the requests that caused it: the batch is retried request by request.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from steper_ray.reasoning.generators.protocol import Generation, GenRequest, failed
from steper_ray.reasoning.prompts import COMPLETION_END, encode_prompt

log = logging.getLogger(__name__)


class HFGenerator:
    def __init__(
        self,
        model: str,
        max_tokens: int = 64,
        batch_size: int = 8,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_model_len: int = 4096,
        device: str = "auto",
        dtype: str = "auto",
        seed: int = 0,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype: Any = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                            "float32": torch.float32, "bfloat16": torch.bfloat16,
                            "float16": torch.float16}[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(device).eval()
        self.device = device
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.temperature = temperature
        self.top_p = top_p
        self.max_model_len = max_model_len
        self.seed = seed
        self._newline_ids = {
            i for tok, i in self.tokenizer.get_vocab().items()
            if COMPLETION_END in self.tokenizer.convert_tokens_to_string([tok])
        }
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self._eos_ids = {i for i in [*eos_ids, self.tokenizer.eos_token_id] if i is not None}

    def _cut(self, row: list[int], min_tokens: int, prompt_tokens: int) -> Generation:
        """The step in one generated row, cut as vLLM cuts it (see the module docstring)."""
        text = ""
        for j, tid in enumerate(row):
            if tid in self._eos_ids:
                return Generation(text, j + 1, None, "eos", prompt_tokens)
            new = self.tokenizer.decode(row[: j + 1], skip_special_tokens=True)
            added, text = new[len(text):], new
            if j >= min_tokens and COMPLETION_END in added:
                cut = text[: len(text) - len(added) + added.index(COMPLETION_END)]
                return Generation(cut, j + 1, None, "stop", prompt_tokens)
        return Generation(text, len(row), None, "length", prompt_tokens)

    def _generate_batch(self, prompt_ids: list[list[int]], min_tokens: int, temperature: float,
                        max_tokens: int, seed: int) -> list[Generation]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        newline_ids = torch.tensor(sorted(self._newline_ids), device=self.device)
        start = max(len(p) for p in prompt_ids)

        class _NewlineStop(StoppingCriteria):
            """A row is done once it has written a newline after ``min_tokens`` tokens."""

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                past_min = input_ids.shape[1] - start > min_tokens
                return torch.isin(input_ids[:, -1], newline_ids) & past_min

        enc = self.tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt").to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                                  "min_new_tokens": min_tokens or None,
                                  "stopping_criteria": StoppingCriteriaList([_NewlineStop()])}
        if temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=temperature, top_p=self.top_p)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        start_at = enc.input_ids.shape[1]
        return [self._cut(row, min_tokens, len(p)) for row, p in zip(out[:, start_at:].tolist(), prompt_ids)]

    def _encode(self, req: GenRequest, max_tokens: int) -> list[int] | Generation:
        """Token ids once (length check and generation), or this request's error result."""
        try:
            ids = list(encode_prompt(self.tokenizer, req.prompt).input_ids)
        except Exception as exc:  # noqa: BLE001 - tokenizers raise several types for bad text (a lone surrogate)
            return failed(f"prompt could not be tokenised: {type(exc).__name__}: {exc}")
        if len(ids) + max_tokens > self.max_model_len:
            return failed(f"prompt has {len(ids)} tokens; with max_tokens {max_tokens} "
                          f"it exceeds max_model_len {self.max_model_len}")
        return ids

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        # one generate call per setting: (min_tokens, temperature, max_tokens, seed)
        groups: dict[tuple[int, float, int, int], list[int]] = defaultdict(list)
        ids: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            most = self.max_tokens if req.max_tokens is None else req.max_tokens
            encoded = self._encode(req, most)
            if isinstance(encoded, Generation):
                results[i] = encoded
                continue
            ids[i] = encoded
            t = self.temperature if req.temperature is None else req.temperature
            seed = self.seed if req.seed is None else req.seed
            groups[(min(req.min_tokens, most), t, most, seed)].append(i)
        for setting, members in groups.items():
            for start in range(0, len(members), self.batch_size):
                idx = members[start:start + self.batch_size]
                try:
                    outs = self._generate_batch([ids[i] for i in idx], *setting)
                except Exception as exc:  # noqa: BLE001 - isolate a failing batch request by request
                    log.warning("batch generate failed (%s: %s); retrying one by one", type(exc).__name__, exc)
                    outs = [self._one(ids[i], setting) for i in idx]
                for i, g in zip(idx, outs):
                    results[i] = g
        return [r for r in results if r is not None]

    def _one(self, prompt_ids: list[int], setting: tuple[int, float, int, int]) -> Generation:
        try:
            return self._generate_batch([prompt_ids], *setting)[0]
        except Exception as exc:  # noqa: BLE001
            return failed(f"generation failed: {type(exc).__name__}: {exc}")

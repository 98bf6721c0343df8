"""HFGenerator: transformers ``generate`` in batches with left padding (CPU or one GPU)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from steper_ray.reasoning.generators.protocol import Generation, GenRequest, first_line

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
            i for tok, i in self.tokenizer.get_vocab().items() if "\n" in self.tokenizer.convert_tokens_to_string([tok])
        }

    def _generate_batch(self, prompt_ids: list[list[int]]) -> list[Generation]:
        import torch

        enc = self.tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt").to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if self.temperature > 0:
            torch.manual_seed(self.seed)
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        results = []
        for row in out[:, enc.input_ids.shape[1]:].tolist():
            # Stop at the first newline token (or EOS); count only the tokens that were kept.
            kept = []
            for tid in row:
                if tid == self.tokenizer.eos_token_id or tid == self.tokenizer.pad_token_id or tid in self._newline_ids:
                    if tid in self._newline_ids:
                        kept.append(tid)
                    break
                kept.append(tid)
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            results.append(Generation(first_line(text), len(kept)))
        return results

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        ok: list[int] = []
        ids: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            ids[i] = self.tokenizer(req.prompt).input_ids  # once: length check and generation
            n = len(ids[i])
            if n + self.max_tokens > self.max_model_len:
                results[i] = Generation("", 0, f"prompt has {n} tokens; with max_tokens {self.max_tokens} "
                                               f"it exceeds max_model_len {self.max_model_len}")
            else:
                ok.append(i)
        for start in range(0, len(ok), self.batch_size):
            idx = ok[start:start + self.batch_size]
            try:
                outs = self._generate_batch([ids[i] for i in idx])
            except (RuntimeError, ValueError) as exc:  # isolate a failing batch request by request
                log.warning("batch generate failed (%s); retrying one by one", exc)
                outs = []
                for i in idx:
                    try:
                        outs += self._generate_batch([ids[i]])
                    except (RuntimeError, ValueError) as exc1:
                        outs.append(Generation("", 0, f"generation failed: {exc1}"))
            for i, g in zip(idx, outs):
                results[i] = g
        return [r for r in results if r is not None]

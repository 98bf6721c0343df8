"""GPU-only: the bf16 ZeRO-2 throughput script runs and reports MFU. Skipped without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_train_script_reports_tokens_and_mfu() -> None:
    script = Path(__file__).resolve().parents[2] / "bench/gpu_train.py"
    out = subprocess.run([sys.executable, str(script), "--steps", "3", "--warmup", "1", "--micro-batch", "2",
                          "--seq-len", "512"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tokens_per_s"] > 0 and result["params"] > 9e8

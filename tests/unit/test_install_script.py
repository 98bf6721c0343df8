"""install.sh prints one line per step and the versions; pip's output goes to its log, whose
tail and path it shows when a step fails; with --dev it installs chromium and chromedriver with
apt-get only when they are missing. Run against a stand-in .venv/bin/python that answers like
pip (noisily) and like the import check, and stand-in browser, apt-get and id commands."""

from __future__ import annotations

import os
import re
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


def _tools(tmp_path: Path, browser: bool, uid: int = 0) -> str:
    """A PATH holding only what install.sh and the stand-ins use, a fake ``id -u``, a fake
    apt-get that logs its arguments (to apt.log, and noisily to stdout), and, with ``browser``,
    stand-in chromium and chromedriver."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "env", "dirname", "tail", "sed", "seq", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    stubs = {"id": f"echo {uid}", "apt-get": f'echo "$*" >>{tmp_path / "apt.log"}; echo "Unpacking chromium (1.0) ..."'}
    if browser:
        stubs.update({"chromium": "exit 0", "chromedriver": "exit 0"})
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def _run(root: Path, fail_on: str = "", path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAIL_ON": fail_on, "PYTHON": sys.executable}
    if path is not None:
        env["PATH"] = path
    env.pop("INSTALL_LOG", None)
    return subprocess.run([shutil.which("bash") or "bash", str(root / "install.sh"), "--dev"], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_one_line_per_step_and_pip_output_in_the_log(tmp_path: Path) -> None:
    root = _install_dir(tmp_path)
    done = _run(root, path=_tools(tmp_path, browser=True))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = lines[:-3] + lines[-2:-1]
    assert len(lines) == 8 and all(line.rstrip().endswith("s)") for line in steps), lines
    assert lines[-3].split() == ["chromium", "and", "chromedriver", "(browser", "test)", "present"]
    assert not (tmp_path / "apt.log").exists()  # present: apt-get is not called
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


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dev_installs_a_missing_browser_with_apt_get_as_root_only(tmp_path: Path) -> None:
    root = _install_dir(tmp_path)
    done = _run(root, path=_tools(tmp_path, browser=False, uid=0))
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[-3]
    assert re.fullmatch(r"chromium and chromedriver \(browser test\) +ok \(\d+ s\)", line), line
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update -qq", "install -y -qq --no-install-recommends chromium chromium-driver"]
    assert "Unpacking chromium" in (root / "install.log").read_text() and "Unpacking" not in done.stdout

    (tmp_path / "apt.log").unlink()
    other = tmp_path / "user"
    other.mkdir()
    done = _run(root, path=_tools(other, browser=False, uid=1000))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3].endswith("skipped (not root; sudo apt-get install chromium chromium-driver)")
    assert not (tmp_path / "apt.log").exists() and not (other / "apt.log").exists()

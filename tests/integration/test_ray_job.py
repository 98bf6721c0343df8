"""`ray job submit` of the local pipeline to a separately started head (`ray start --head`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_local_pipeline_submitted_as_a_ray_job(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash = _free_port(), _free_port()
    # Every fixed default port gets a free one: the test session's own Ray already holds the
    # defaults (its dashboard agent on 52365), and a head whose agent cannot bind never accepts jobs.
    ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")]
    # --block keeps the head in this process group, so it (and only it, not the test session's
    # Ray) is stopped at the end
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}", *ports,
         "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    run = tmp_path / "run"
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient

        deadline = time.time() + 120
        while True:
            try:
                client = JobSubmissionClient(address)
                break
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                assert time.time() < deadline, "the Ray head did not come up"
                time.sleep(2)
        command = [str(bin_dir / "ray"), "job", "submit", "--address", address, "--no-wait",
                   "--submission-id", "steper-local", "--working-dir", ".",
                   "--runtime-env", "jobs/runtime_env/local.yaml", "--",
                   "python", "jobs/run_pipeline.py", "--json", f"run_dir={run}",
                   "data.dev=[{name: hotpotqa, path: 'sample:hotpotqa/dev.jsonl', limit: 10}]",
                   "generate.limit=2", "train.max_steps=2", "train.checkpoint_every=2", "evaluate.limit=2",
                   "train.num_workers=1"]  # the two-worker pipeline is tested without a job
        while True:
            submit = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            # the dashboard answers a little before the node's job agent does
            if submit.returncode == 0 or "No available agent" not in submit.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert submit.returncode == 0, submit.stderr
        deadline = time.time() + 600
        while (status := client.get_job_status("steper-local")) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                          JobStatus.STOPPED}:
            assert time.time() < deadline, "the job did not finish in 10 minutes"
            time.sleep(3)
        logs = client.get_job_logs("steper-local")
        assert status == JobStatus.SUCCEEDED, logs[-3000:]
        summary = json.loads(logs.strip().splitlines()[-1])
        assert [s["status"] for s in summary["stages"]] == ["done"] * 5
        assert summary["generate"]["kept"] == 4  # 2 questions from each of the 2 training sets
        assert summary["evaluate"]["metrics"]["hotpotqa"]["questions"] == 2
        assert (run / "train" / "model" / "model.safetensors").is_file()
        assert json.loads((run / "summary.json").read_text())["stages"] == summary["stages"]
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for proc in psutil.process_iter(["pid", "cmdline"]):  # anything of that head still alive
            if temp_dir in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)

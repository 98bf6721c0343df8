"""Student training under Ray Train + DeepSpeed ZeRO-3 on 2 CPU workers (gloo): restart after a
killed worker, resume by run name, and the worker body as a plain function. That a student
memorises its examples and its export serves them is checked end to end (test_end_to_end)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steper_ray.config import BM25Config, load_config
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.generate.examples import trace_examples
from steper_ray.reasoning.generators.evidence import EvidenceGenerator
from steper_ray.reasoning.loop import Question, StepwiseReasoner
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.train.trainer import run_train

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def small_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Step examples of two real questions with short prompts (one passage per step)."""
    records = read_dataset("sample:musique/train.json", limit=2).records
    retriever = BM25Retriever.build(extract_corpus(records), BM25Config())
    traces = StepwiseReasoner(retriever, EvidenceGenerator(records), max_steps=3, k=1, max_passages=2).run(
        [Question(r.id, r.question) for r in records])
    rows = [e for t in traces for e in trace_examples(t)]
    path = tmp_path_factory.mktemp("examples") / "examples.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _base(tmp_path: Path, examples: Path, model: Path) -> list[str]:
    return [f"run_dir={tmp_path}", f"train.student={model}", f"train.examples={examples}",
            "train.micro_batch_size=1", "train.grad_accum=1", "train.epochs=100", "train.run_name=resumable"]


def _logged_steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_worker_restarts_from_the_last_checkpoint_and_a_rerun_continues(
        tmp_path: Path, small_examples: Path, tiny_model_dir: Path) -> None:
    import os
    import signal
    import threading
    import time

    import psutil

    base = _base(tmp_path, small_examples, tiny_model_dir) + ["train.checkpoint_every=5", "train.max_failures=1"]
    cfg = load_config(None, base + ["train.max_steps=25"])
    storage = tmp_path / "train/ray/resumable"
    killed: list[int] = []

    metrics = tmp_path / "train/metrics.jsonl"

    def last_logged_step() -> int:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        try:
            return json.loads(lines[-1])["step"] if lines else 0
        except json.JSONDecodeError:  # caught mid-write
            return 0

    def kill_a_worker_after_first_checkpoint() -> None:
        # Kill mid-way between checkpoints (2-3 steps after one), never right on one, so that the
        # restart has finished steps to redo and the test can see it.
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            has_ckpt = storage.exists() and any(p.name.startswith("checkpoint_") for p in storage.iterdir())
            if has_ckpt and last_logged_step() > 5 and last_logged_step() % 5 in (2, 3):
                for proc in psutil.process_iter(["pid", "cmdline"]):
                    if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []):
                        os.kill(proc.info["pid"], signal.SIGKILL)
                        killed.append(proc.info["pid"])
                        return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    summary = run_train(cfg)
    killer.join(timeout=5)
    assert killed, "no training worker was found to kill"
    steps = _logged_steps(tmp_path / "train")
    assert summary["steps"] == 25
    # After the kill, training went back to a checkpoint (a multiple of 5, not the start) and
    # redid the steps after it; metrics.jsonl holds each step once, the redone ones as redone.
    state = json.loads((tmp_path / "train/train_state.json").read_text())
    assert state["resumed_from_step"] in (5, 10, 15, 20)
    assert steps == list(range(1, 26))

    # A rerun with the same name and more steps starts from the step-25 checkpoint: steps 26-28
    # only, no restart at 1.
    again = run_train(load_config(None, base + ["train.max_steps=28"]))
    assert _logged_steps(tmp_path / "train") == list(range(1, 29))
    assert again["steps"] == 28
    assert json.loads((tmp_path / "train/train_state.json").read_text())["resumed_from_step"] == 25


@pytest.mark.slow
def test_train_loop_runs_without_ray_as_a_plain_function(tmp_path: Path, small_examples: Path,
                                                         tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    # a second plain run, in a child inheriting the first run's environment
    again = (
        "from steper_ray.config import TrainConfig\n"
        "from steper_ray.train.loop import make_loop_config, train_loop_per_worker\n"
        "cfg = TrainConfig(max_steps=1, micro_batch_size=1, grad_accum=2)\n"
        f"train_loop_per_worker(make_loop_config(cfg, {str(tiny_model_dir)!r}, {str(small_examples)!r}, "
        f"{str(tmp_path / 'again')!r}))\n"
    )
    code = (
        "import json, sys\n"
        "from steper_ray.config import TrainConfig\n"
        "from steper_ray.train.loop import make_loop_config, train_loop_per_worker\n"
        "cfg = TrainConfig(max_steps=3, checkpoint_every=2, zero_stage=2, micro_batch_size=1, grad_accum=2,\n"
        "                  gradient_checkpointing=True)\n"
        f"train_loop_per_worker(make_loop_config(cfg, {str(tiny_model_dir)!r}, {str(small_examples)!r}, {str(tmp_path)!r}))\n"
        # the process is left as it was: no rendezvous variables, no process group ...
        "import os, subprocess, torch.distributed as dist\n"
        "leaked = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT') if k in os.environ]\n"
        "assert not leaked and not dist.is_initialized(), (leaked, dist.is_initialized())\n"
        # ... so a second plain run in a child inheriting this environment works
        f"subprocess.run([sys.executable, '-c', {again!r}], check=True, timeout=600)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "again/model/model.safetensors").is_file()
    assert _logged_steps(tmp_path) == [1, 2, 3]
    assert (tmp_path / "checkpoints/latest").is_file()
    assert (tmp_path / "model/model.safetensors").is_file()
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["world_size"] == 1 and state["steps"] == 3


@pytest.mark.slow
def test_a_loss_that_turns_infinite_stops_training_before_that_step_is_saved(
        tmp_path: Path, small_examples: Path, tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    # The third forward (step 2's first micro-batch) returns inf, as a diverging run would.
    code = (
        "import math\n"
        "from steper_ray.config import TrainConfig\n"
        "from steper_ray.train import loss\n"
        "from steper_ray.train.loop import make_loop_config, train_loop_per_worker\n"
        "calls, forward = [0], loss.StepERLoss.forward\n"
        "def diverging(self, *a, **k):\n"
        "    calls[0] += 1\n"
        "    out = forward(self, *a, **k)\n"
        "    return out * math.inf if calls[0] >= 3 else out\n"
        "loss.StepERLoss.forward = diverging\n"
        "cfg = TrainConfig(max_steps=3, checkpoint_every=1, zero_stage=2, micro_batch_size=1, grad_accum=2)\n"
        f"train_loop_per_worker(make_loop_config(cfg, {str(tiny_model_dir)!r}, {str(small_examples)!r}, {str(tmp_path)!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1
    assert "LossNotFinite: the training loss became inf at optimizer step 2 of 3" in done.stderr
    assert _logged_steps(tmp_path) == [1]
    assert (tmp_path / "checkpoints/latest").read_text().strip().endswith("1")  # step 1's, not step 2's
    assert not (tmp_path / "model").exists()

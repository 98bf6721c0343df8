"""The training worker's parts that do not need a process group: the examples read, the local
context (checkpoints in, checkpoints out), the optimizer groups from transformers' decay rule and the
warmup length of transformers' cosine schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from steper_ray.config import TrainConfig
from steper_ray.train.context import LocalContext, checkpoint_tag, in_ray_train_worker
from steper_ray.train.data import read_example_rows
from steper_ray.train.loop import StudentWithLoss, decay_parameter_names, param_groups, warmup_steps
from steper_ray.train.loss import StepERLoss


class _Engine:
    def __init__(self) -> None:
        self.saved: list[tuple[str, str, dict[str, Any]]] = []

    def save_checkpoint(self, path: str, tag: str, client_state: dict[str, Any]) -> None:
        self.saved.append((path, tag, client_state))
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "latest").write_text(tag)  # as DeepSpeed does


def test_examples_are_read_whole_from_a_file_or_a_directory_of_parts(tmp_path: Path) -> None:
    examples = tmp_path / "examples.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "task": "init"}, {"id": "b", "task": "agg"}]), examples)
    assert [r["id"] for r in read_example_rows(str(examples))] == ["a", "b"]
    parts = tmp_path / "examples"
    parts.mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": "a", "task": "init"}]), parts / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist([{"id": "b", "task": "agg"}]), parts / "part-00001.parquet")
    assert [r["id"] for r in read_example_rows(str(parts))] == ["a", "b"]


def test_local_context_keeps_checkpoints_in_the_train_dir(tmp_path: Path) -> None:
    ctx = LocalContext(tmp_path / "train/checkpoints")
    assert ctx.resume_from(0) is None  # nothing saved yet
    engine = _Engine()
    ctx.checkpoint(engine, 20, {"loss_init": 1.0})
    assert engine.saved == [(str(tmp_path / "train/checkpoints"), "step00000020", {"step": 20})]
    assert ctx.resume_from(0) == tmp_path / "train/checkpoints"
    assert checkpoint_tag(7) == "step00000007"
    assert not in_ray_train_worker()  # a test process is no Ray Train worker


def test_optimizer_groups_follow_transformers_decay_rule(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    module = StudentWithLoss(model, StepERLoss("steper"))
    decay = decay_parameter_names(model)
    assert decay and not any("norm" in n or n.endswith("bias") for n in decay)
    assert any(n.endswith("q_proj.weight") for n in decay)
    cfg = TrainConfig(weight_decay=0.1, lr=1e-3)
    groups = param_groups(module, cfg)
    assert [(g["weight_decay"], g["lr"]) for g in groups] == [(0.1, 1e-3), (0.0, 1e-3), (0.0, cfg.loss.sigma_lr)]
    assert groups[2]["params"] == [module.loss.log_vars]
    n_model = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_model
    uniform = param_groups(StudentWithLoss(model, StepERLoss("uniform")), cfg)
    assert len(uniform) == 2  # fixed weights: no sigma group


@pytest.mark.parametrize(("ratio", "total", "warmup"), [(0.1, 34, 4), (0.0, 6, 0), (0.05, 300, 15)])
def test_warmup_rounds_up_like_the_trainer(ratio: float, total: int, warmup: int) -> None:
    assert warmup_steps(TrainConfig(warmup_ratio=ratio), total) == warmup



def test_local_context_leaves_the_process_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch.distributed as dist

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")  # a launcher's own value is kept, not removed
    ctx = LocalContext(tmp_path / "checkpoints")
    ctx.init_process_group()
    assert os.environ["WORLD_SIZE"] == "1" and os.environ["MASTER_PORT"]
    dist.init_process_group("gloo")  # what deepspeed.init_distributed does with that environment
    try:
        assert dist.get_world_size() == 1
    finally:
        ctx.close()
    assert not dist.is_initialized()
    assert not {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} & set(os.environ)
    assert os.environ["LOCAL_RANK"] == "0"


def test_training_progress_follows_the_logged_steps(tmp_path: Path) -> None:
    import json
    import time

    from steper_ray.progress import Progress, active
    from steper_ray.train.trainer import last_logged_step, steps_progress

    metrics = tmp_path / "metrics.jsonl"
    assert last_logged_step(metrics) is None  # not written yet
    bar = Progress("train")
    with active(bar), steps_progress(metrics, every_s=0.01):
        metrics.write_text(json.dumps({"step": 1, "total_steps": 4}) + "\n" + '{"step": 2, "tot')  # half-written
        deadline = time.time() + 5
        while bar.done != 1 and time.time() < deadline:
            time.sleep(0.01)
        assert (bar.done, bar.total, bar.unit) == (1, 4, "steps")
        metrics.write_text(metrics.read_text().rsplit("\n", 1)[0] + "\n" + json.dumps({"step": 4, "total_steps": 4}) + "\n")
    assert (bar.done, bar.total) == (4, 4)  # the last row is read once more when training ends


def test_a_step_loss_that_is_not_finite_stops_training_with_the_settings_to_change() -> None:
    import math

    import torch
    from steper_ray.errors import LossNotFinite
    from steper_ray.train.loop import StepStats, check_finite

    cfg = TrainConfig(lr=0.5)
    zeros = torch.zeros(3, dtype=torch.float64)
    check_finite(StepStats(zeros, zeros, 10.0, 1.0, 2.5), 3, 10, cfg)  # finite: nothing happens
    for bad in (math.inf, math.nan):
        with pytest.raises(LossNotFinite, match=r"became (inf|nan) at optimizer step 3 of 10.*train.lr \(0.5\)"):
            check_finite(StepStats(zeros, zeros, 10.0, 1.0, bad), 3, 10, cfg)


def test_a_user_error_raised_in_a_ray_train_worker_is_found_for_the_cli() -> None:
    from ray.train import WorkerGroupError
    from steper_ray.errors import LossNotFinite, UserError, user_error_in

    diverged = LossNotFinite("the training loss became inf")
    wrapped = WorkerGroupError("rank 1 failed", {0: RuntimeError("peer gone"), 1: diverged})
    assert user_error_in(wrapped) is diverged
    try:
        raise RuntimeError("controller") from wrapped
    except RuntimeError as chained:
        assert user_error_in(chained) is diverged
    assert user_error_in(WorkerGroupError("oom", {0: MemoryError()})) is None
    plain = UserError("x")
    assert user_error_in(plain) is plain


def test_ctrl_c_handled_by_ray_train_is_reported_as_an_interruption(tmp_path: Path, tiny_model_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train's fit() swaps in its own SIGINT handler, aborts on Ctrl-C and returns normally
    (Ray 2.60): training must then raise KeyboardInterrupt and leave the caller's handler in place."""
    import signal

    import ray.train.torch
    from steper_ray.config import load_config
    from steper_ray.train import trainer

    class AbortedTrainer:  # what TorchTrainer.fit does when its handler caught a Ctrl-C
        exits = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def fit(self) -> None:
            signal.signal(signal.SIGINT, lambda *_: None)
            if self.exits:  # the handler's sys.exit(0) once the aborted controller is gone
                raise SystemExit(0)
            return None  # or the run ends, aborted, without an export

    examples = tmp_path / "examples.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "q-0", "task": "init", "prompt": "Q", "completion": "A."}]), examples)
    monkeypatch.setattr(trainer, "ensure_ray", lambda: None)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", AbortedTrainer)
    cfg = load_config(None, [f"run_dir={tmp_path}", f"train.student={tiny_model_dir}", f"train.examples={examples}",
                             "train.num_workers=1", "train.grad_accum=1", "train.micro_batch_size=1"])
    before = signal.getsignal(signal.SIGINT)
    for exits in (False, True):
        AbortedTrainer.exits = exits
        with pytest.raises(KeyboardInterrupt):
            trainer.run_train(cfg)
        assert signal.getsignal(signal.SIGINT) is before
    assert not (tmp_path / "train" / "summary.json").exists()

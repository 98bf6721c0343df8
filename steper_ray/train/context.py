"""What differs between the training worker under Ray Train and the same worker as a plain
process: where checkpoints come from and go, and how metrics are reported with them. The
worker body (``train.loop``) only talks to a ``TrainContext``; both read their rows the same
way (``train.data.read_example_rows``).

- ``RayTrainContext``: resume from the checkpoint Ray Train hands the worker group,
  checkpoints reported with ``ray.train.report`` (Ray Train keeps ``train.keep_checkpoints`` of
  them under the run's storage path and restarts failed workers from the latest).
- ``LocalContext``: one process, checkpoints in ``<train dir>/checkpoints`` (DeepSpeed's own
  ``latest`` tag), resumed from there.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch.distributed as dist

from steper_ray.train.checkpoints import resume_dir


class TrainContext(Protocol):
    def init_process_group(self) -> None:
        """Prepare what ``deepspeed.init_distributed`` needs (rank, world size, rendezvous)."""

    def resume_from(self, local_rank: int) -> Path | None:
        """Directory of the checkpoint to resume from (the same on every rank), or None."""

    def checkpoint(self, engine: Any, step: int, metrics: dict[str, Any]) -> None:
        """Save every rank's ZeRO shards as the checkpoint of ``step``, reported with ``metrics``."""


def checkpoint_tag(step: int) -> str:
    return f"step{step:08d}"


class RayTrainContext:
    """The worker inside a Ray Train worker group (``TorchTrainer``)."""

    def init_process_group(self) -> None:
        pass  # Ray Train set up the torch process group and its environment

    def resume_from(self, local_rank: int) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        # Ray Train V2 hands every worker the merged directory of all workers' files.
        return resume_dir(ckpt, local_rank, dist.barrier)

    def checkpoint(self, engine: Any, step: int, metrics: dict[str, Any]) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(tmp, tag=checkpoint_tag(step), client_state={"step": step})
            ray.train.report({**metrics, "step": step}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class LocalContext:
    """The worker as one plain process (no Ray): GPU checks, benchmarks, debugging."""

    def __init__(self, checkpoints: Path):
        self.checkpoints = Path(checkpoints)
        self._set_env: list[str] = []
        self._group_was_up = False

    def init_process_group(self) -> None:
        """A one-process group, so DeepSpeed runs without a launcher (a launcher's own
        environment, when there is one, wins). ``close`` undoes it."""
        self._group_was_up = dist.is_available() and dist.is_initialized()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
            if key not in os.environ:
                os.environ[key] = value
                self._set_env.append(key)

    def close(self) -> None:
        """Leave the process as it was: destroy the process group this run started and remove
        the rendezvous variables it set (a later run, or a subprocess inheriting this
        environment, would otherwise join a group that is gone)."""
        if not self._group_was_up and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in self._set_env:
            os.environ.pop(key, None)
        self._set_env = []

    def resume_from(self, local_rank: int) -> Path | None:
        return self.checkpoints if (self.checkpoints / "latest").is_file() else None

    def checkpoint(self, engine: Any, step: int, metrics: dict[str, Any]) -> None:
        engine.save_checkpoint(str(self.checkpoints), tag=checkpoint_tag(step), client_state={"step": step})


def in_ray_train_worker() -> bool:
    """Whether this process is a Ray Train worker (the one place the two modes are told apart)."""
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:  # noqa: BLE001 - no Ray, or not inside a Ray Train worker
        return False

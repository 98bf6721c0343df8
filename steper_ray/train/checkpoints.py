"""Where a worker reads the Ray Train checkpoint it resumes from.

``Checkpoint.to_directory()`` downloads into one temporary directory per checkpoint and node, under
a lock that only serialises the downloads: a worker arriving after the first download finished
downloads again over the files another worker is already reading, and DeepSpeed then reads a
truncated shard ("failed finding central directory"). So a checkpoint on a local or shared file
system is read in place, and a remote one is downloaded once per node by local rank 0 while the
other ranks wait at a barrier.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def resume_dir(ckpt: Any, local_rank: int, barrier: Callable[[], None],
               download_root: Path | None = None) -> Path:
    """Local directory holding the files of ``ckpt`` (a ``ray.train.Checkpoint``), the same on every rank.

    ``barrier`` must be called by every rank (it is, on both paths), so that no rank reads a
    directory that is still being written.
    """
    import pyarrow.fs

    if isinstance(ckpt.filesystem, pyarrow.fs.LocalFileSystem):
        barrier()
        return Path(ckpt.path)
    root = download_root or Path(tempfile.gettempdir()) / "steper_ray_resume"
    target = root / hashlib.sha1(f"{ckpt.filesystem.type_name}:{ckpt.path}".encode()).hexdigest()[:16]
    if local_rank == 0 and not target.is_dir():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        ckpt.to_directory(str(partial))
        partial.rename(target)  # whole or absent: a crash mid-download is not mistaken for a checkpoint
    barrier()
    return target

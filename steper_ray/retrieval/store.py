"""Index directories: passages, a manifest written last, and checks that make a missing,
partial or corrupt index a clear error instead of a stack trace from deep inside a library."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from steper_ray import __version__
from steper_ray.atomic_dir import atomic_dir
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError
from steper_ray.retrieval.protocol import Hit

MANIFEST = "manifest.json"
PASSAGES = "passages.parquet"
FORMAT_VERSION = 1


def rebuild_hint(path: Path) -> str:
    return (
        f"rebuild it with `steper-ray index --dataset DATA --kind bm25|dense --out {path}` "
        "(or --corpus CORPUS)"
    )


class PassageTable:
    """Passages of an index by row number; memory-mapped so a big corpus costs little RAM."""

    def __init__(self, table: pa.Table):
        self._table = table
        self._ids = table.column("id")
        self._titles = table.column("title")
        self._texts = table.column("text")

    @classmethod
    def from_passages(cls, passages: list[Passage]) -> PassageTable:
        return cls(
            pa.table(
                {
                    "id": [p.id for p in passages],
                    "title": [p.title for p in passages],
                    "text": [p.text for p in passages],
                }
            )
        )

    def __len__(self) -> int:
        return self._table.num_rows

    def titles(self) -> list[str]:
        return self._titles.to_pylist()

    def texts(self) -> list[str]:
        return self._texts.to_pylist()

    def ids(self) -> list[str]:
        return self._ids.to_pylist()

    def hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        out = []
        for row, score in zip(rows.tolist(), scores.tolist()):
            if row < 0:  # FAISS pads with -1 when fewer than k results exist
                continue
            out.append(
                Hit(
                    self._ids[row].as_py(),
                    self._titles[row].as_py(),
                    self._texts[row].as_py(),
                    float(score),
                )
            )
        return out

    def write(self, path: Path) -> None:
        pq.write_table(self._table, path)


atomic_index_dir = atomic_dir  # one owner: steper_ray.atomic_dir


def _files(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def write_manifest(root: Path, kind: str, num_passages: int, **extra: Any) -> dict[str, Any]:
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "num_passages": num_passages,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steper_ray_version": __version__,
        **extra,
        "files": _files(root),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def check_index_dir(path: str | Path) -> dict[str, Any]:
    """Return the manifest of a complete index, or raise IndexLoadError saying what is wrong."""
    root = Path(path)
    if not root.exists():
        raise IndexLoadError(f"no index at {root}: the directory does not exist; {rebuild_hint(root)}")
    if not root.is_dir():
        raise IndexLoadError(f"{root} is a file, not an index directory; {rebuild_hint(root)}")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise IndexLoadError(
            f"{root} is not a complete index (no {MANIFEST}: the build was interrupted or this "
            f"is another directory); {rebuild_hint(root)}"
        )
    try:
        manifest = json.loads(mpath.read_text())
        files = dict(manifest["files"])
        kind = manifest["kind"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise IndexLoadError(f"{mpath} is corrupt (not a valid manifest); {rebuild_hint(root)}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexLoadError(
            f"{root} has index format {manifest.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}; {rebuild_hint(root)}"
        )
    problems = []
    for name, size in files.items():
        fp = root / name
        if not fp.is_file():
            problems.append(f"{name} is missing")
        elif fp.stat().st_size != size:
            problems.append(f"{name} has {fp.stat().st_size} bytes, expected {size}")
    if problems:
        raise IndexLoadError(
            f"index {root} is partial or corrupt ({'; '.join(problems)}); {rebuild_hint(root)}"
        )
    if kind not in ("bm25", "dense"):
        raise IndexLoadError(f"{mpath} names unknown index kind {kind!r}; {rebuild_hint(root)}")
    return manifest


def load_passage_table(root: Path) -> PassageTable:
    try:
        return PassageTable(pq.read_table(root / PASSAGES, memory_map=True))
    except (OSError, pa.ArrowException) as exc:
        raise IndexLoadError(
            f"{root / PASSAGES} cannot be read ({exc}); {rebuild_hint(root)}"
        ) from None

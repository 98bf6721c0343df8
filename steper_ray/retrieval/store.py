"""Index directories: passages, a manifest written last, and checks that make a missing,
partial or corrupt index a clear error instead of a stack trace from deep inside a library."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from steper_ray import __version__
from steper_ray.atomic_dir import atomic_dir, refuse_foreign
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError, UserError
from steper_ray.retrieval.protocol import Hit

MANIFEST = "manifest.json"
PASSAGES = "passages.parquet"
FAISS_FILE = "faiss.index"
FORMAT_VERSION = 1


def rebuild_hint(path: Path) -> str:
    """How to make the index at ``path``: the index command, or, for the hidden work directory
    of an unfinished distributed build (``.<name>.build`` with its ``work.json``), the index it
    was building."""
    from steper_ray.retrieval.distributed import index_of_work_dir  # it imports this module

    target = index_of_work_dir(Path(path))
    if target is not None:
        return (f"it is the work directory of an unfinished build of the index {target}: rerun that "
                f"`steper-ray index ... --out {target}` command to finish it, and query {target}")
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
        """Raises ValueError when two passages share an id: the id is what retrieval returns and
        the reasoning loop deduplicates by, so the second would never be shown."""
        repeated = [i for i, n in Counter(p.id for p in passages).items() if n > 1]
        if repeated:
            raise ValueError(f"passage ids must be unique (repeated: {repeated[:5]}); read corpora "
                             "with steper_ray.data.read_corpus, which counts repeats")
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

    def take(self, rows: np.ndarray) -> PassageTable:
        """The passages at ``rows``, in that order."""
        return PassageTable(self._table.take(pa.array(rows, type=pa.int64())))

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


# What an index directory may hold besides the files its manifest lists: a rebuild replaces
# these, and nothing else (a directory holding other data is refused, not replaced).
INDEX_ENTRIES = frozenset({MANIFEST, PASSAGES, "summary.json", "bm25s", "tokens.parquet", FAISS_FILE})


def index_entries(root: Path) -> frozenset[str]:
    """Top-level names a complete or partial index at ``root`` may hold."""
    listed: set[str] = set()
    try:
        listed = {name.split("/", 1)[0] for name in json.loads((root / MANIFEST).read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no readable manifest: only the fixed names
    return INDEX_ENTRIES | listed


def _unlisted_files(root: Path) -> list[str] | None:
    """Files under ``root``'s directories that its manifest does not list (a shard's own
    manifest and summary aside); None when ``root`` has no readable index manifest."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        listed = set(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if "kind" not in manifest:  # an index's manifest names its kind
        return None
    return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))
            if p.parent != root and (p.is_symlink() or p.is_file())
            and p.name not in (MANIFEST, "summary.json") and p.relative_to(root).as_posix() not in listed]


def check_index_target(out: str | Path) -> None:
    """Raise UserError (nothing changed) when ``out`` holds anything but an index, e.g. a
    directory of other indexes or a user's files: building there would replace them. An
    existing index is fine (a rebuild replaces it): a directory with an index's manifest, whose
    subdirectories hold only the files it lists. Names an index uses, without that manifest
    (a user's ``summary.json`` or ``bm25s/``), are refused."""
    out = Path(out)
    own = index_entries(out)
    refuse_foreign(out, lambda name: name in own, "an index")
    if not out.is_dir() or not any(out.iterdir()):
        return
    unlisted = _unlisted_files(out)
    if unlisted is None:
        shown = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())[:5])
        raise UserError(f"{out} holds other data ({shown}) and no {MANIFEST}, so it is not an index this "
                        "command wrote; it would be replaced whole, so choose a new or empty directory "
                        "(nothing was changed)")
    if unlisted:
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        raise UserError(f"{out} holds files its index does not list ({', '.join(unlisted[:5])}{more}); it would "
                        "be replaced whole, so move them or choose a new or empty directory (nothing was changed)")


@contextmanager
def atomic_index_dir(out: Path) -> Iterator[Path]:
    """``atomic_dir`` for an index, after ``check_index_target``."""
    out = Path(out)
    check_index_target(out)
    with atomic_dir(out) as tmp:
        yield tmp


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
        # Most often a corpus or dataset file given where its index was meant.
        raise IndexLoadError(f"{root} is a file, not an index directory; point at an index directory, or "
                             f"build one from this file first: `steper-ray index --corpus {root} --out DIR` "
                             "(--dataset for a question file)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise IndexLoadError(
            f"{root} is not a complete index (no {MANIFEST}: the build was interrupted or this "
            f"is another directory); an interrupted build: {rebuild_hint(root)}; another directory: "
            "point at an index, or build one into a new directory (index refuses one holding other data)"
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
    if kind not in ("bm25", "dense", "sharded"):
        raise IndexLoadError(f"{mpath} names unknown index kind {kind!r}; {rebuild_hint(root)}")
    num_passages = manifest.get("num_passages")
    if not isinstance(num_passages, int) or num_passages < 0:
        raise IndexLoadError(f"{mpath} is corrupt (num_passages {num_passages!r}); {rebuild_hint(root)}")
    if kind == "sharded":
        from steper_ray.retrieval.shards import shard_dirs

        for shard, size in zip(shard_dirs(root, manifest), manifest["shard_passages"]):
            if check_index_dir(shard)["num_passages"] != size:
                raise IndexLoadError(f"index {root} is corrupt ({shard.name} does not hold the {size} passages "
                                     f"the manifest says); {rebuild_hint(root)}")
        return manifest
    for name in files:
        problem = file_problem(root / name, num_passages)
        if problem:
            raise IndexLoadError(f"index {root} is corrupt ({name} {problem}); {rebuild_hint(root)}")
    return manifest


def file_problem(path: Path, num_passages: int) -> str | None:
    """Why one index file is unreadable, from what its format lets us check cheaply, or None.

    Parquet: the footer parses and there is one row per passage (passages, rank_bm25 tokens);
    JSON: it parses; NumPy: the header parses and the data fits the file. The engine loaders
    then check what spans files (bm25s matrix shapes, FAISS vector count) and read every
    column of the passages. Sizes were checked against the manifest before.
    """
    try:
        if path.suffix == ".parquet":
            rows = pq.read_metadata(path).num_rows
            if rows != num_passages:
                return f"has {rows} rows, the manifest says {num_passages} passages"
        elif path.suffix == ".json":
            json.loads(path.read_bytes())
        elif path.suffix == ".npy":
            np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, pa.ArrowException) as exc:  # JSONDecodeError is a ValueError
        return f"cannot be read: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def load_passage_table(root: Path, num_passages: int | None = None) -> PassageTable:
    """The passages of an index, every column read (memory-mapped); IndexLoadError naming the
    file when a column cannot be decoded or the rows are not ``num_passages``."""
    path = root / PASSAGES
    try:
        # ParquetFile, not read_table: read_table imports pyarrow.dataset (~0.5 s per process).
        table = pq.ParquetFile(path, memory_map=True).read()
        missing = {"id", "title", "text"} - set(table.column_names)
        if missing:
            raise ValueError(f"no column(s) {sorted(missing)}")
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise IndexLoadError(f"{path} cannot be read ({exc}); {rebuild_hint(root)}") from None
    if num_passages is not None and table.num_rows != num_passages:
        raise IndexLoadError(f"{path} has {table.num_rows} passages, the manifest says {num_passages}; "
                             f"{rebuild_hint(root)}")
    return PassageTable(table)

"""Which directories a benchmark may write into: a new or empty one, or its own earlier output
(a rerun overwrites its summary and reuses its tiny model and index), never one holding other
data (``atomic_dir.own_out_dir``). Its own output is recognised by its summary.json or, for a
run stopped before its summary, by the marker file it writes first: a directory that merely
holds entries of the same names (a user's ``index/``) is another's."""

from __future__ import annotations

from pathlib import Path

from steper_ray.atomic_dir import own_out_dir
from steper_ray.errors import UserError
from steper_ray.summary import read_summary

# What each benchmark writes into its --out, besides summary.json and its hidden scratch
# directories (".bench-index-*", "scale-indexes-*" while it runs).
BENCH_ENTRIES: dict[str, frozenset[str]] = {
    "training": frozenset({"examples.parquet", "model", "plain_worker", "plain_worker_no_cluster", "ray_1_worker",
                           "ray_run"}),
    "serving": frozenset({"index", "model"}),
    "generation": frozenset({"index", "model", "questions.jsonl", "ray_run"}),
    "index": frozenset(),
    "retrieval": frozenset(),
}
_SCRATCH = (".bench-index-", "scale-indexes-")
MARKER = ".steper-bench"  # holds the benchmark's name; written before anything else


def _bench_name(out: Path) -> str | None:
    """The benchmark whose summary.json is in ``out`` (None: absent, unreadable or another's)."""
    try:
        data = read_summary(out / "summary.json")
    except ValueError:
        return None
    name = data.get("benchmark") or str(data.get("command") or "").removeprefix("bench ")
    return name if isinstance(name, str) else None


def bench_out_dir(out: Path, which: str, logs: Path | None) -> Path:
    """``out`` created for benchmark ``which`` and marked as its output (``MARKER``); UserError
    (exit 2, nothing changed) when it holds anything else: another command's summary.json (a
    run directory), a user's files, entries named like this benchmark's that it did not write."""
    def ours(d: Path) -> bool:
        if (d / "summary.json").exists():
            return _bench_name(d) == which
        try:
            marked = (d / MARKER).read_text().strip() == which
        except (OSError, UnicodeDecodeError):
            return False
        return marked and all(p.name in BENCH_ENTRIES[which] or p.name == MARKER or p.name.startswith(_SCRATCH)
                              for p in d.iterdir())

    own_out_dir(out, None, f"the {which} benchmark's results", ours, logs)
    try:
        (out / MARKER).write_text(which + "\n")
    except OSError as exc:
        raise UserError(f"cannot write in {out} ({exc.strerror or exc}); give a writable directory "
                        "(nothing was changed)") from None
    return out

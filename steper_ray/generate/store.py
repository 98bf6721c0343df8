"""Output parts of the generation job, written so that a killed run resumes exactly once.

Each batch is written as ``examples/part-N.parquet`` then ``traces/part-N.parquet``, each via a
temporary file and an atomic rename. A traces part is the commit record: the questions in it
are done. On restart, temporary files and examples parts without their traces part are removed,
parts that do not read back whole (a file cut short, a damaged column) are moved to
``damaged/`` with their pair, and done questions are skipped, so after any crash and rerun
every input question is in the traces exactly once and its examples exactly once.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from steper_ray.errors import UserError
from steper_ray.generate.filter import reason_kind
from steper_ray.layout import GenerateDir
from steper_ray.summary import summary_command

log = logging.getLogger(__name__)

STEP_TYPE = pa.struct([
    ("step", pa.int64()), ("task", pa.string()), ("query", pa.string()),
    ("retrieved_ids", pa.list_(pa.string())), ("prompt", pa.string()),
    ("student_prompt", pa.string()), ("output", pa.string()), ("num_tokens", pa.int64()),
    ("num_passages", pa.int64()), ("new_passages", pa.int64()), ("attempts", pa.int64()),
    ("notes", pa.list_(pa.string())),
])
TRACE_SCHEMA = pa.schema([
    ("question_id", pa.string()), ("dataset", pa.string()), ("question", pa.string()),
    ("answers", pa.list_(pa.string())), ("answer", pa.string()), ("final_output", pa.string()),
    ("kept", pa.bool_()), ("drop_reason", pa.string()), ("error", pa.string()),
    ("failure", pa.string()), ("num_steps", pa.int64()), ("num_tokens", pa.int64()),
    ("passage_ids", pa.list_(pa.string())), ("steps", pa.list_(STEP_TYPE)),
])
PASSAGE_TYPE = pa.struct([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
# prompt: the student's view in the completion layout; question + passages + reasoning: the same
# state, from which training renders the student's prompt in its own format (completion or chat).
EXAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("question_id", pa.string()), ("task", pa.string()),
    ("step", pa.int64()), ("prompt", pa.string()), ("completion", pa.string()),
    ("question", pa.string()), ("passages", pa.list_(PASSAGE_TYPE)), ("reasoning", pa.list_(pa.string())),
])
# What a teacher actor returns per question: the trace row and its examples (kept traces only).
TEACHER_ROW_SCHEMA = TRACE_SCHEMA.append(pa.field("examples", pa.list_(pa.struct(list(EXAMPLE_SCHEMA)))))
_PART = re.compile(r"^part-(\d+)-([0-9a-f]+)\.parquet$")
_TMP = re.compile(r"^\.part-\d+-[0-9a-f]+\.parquet\.tmp$")  # _atomic_write's name for a part being written
# Columns this store and training read from every part: a part without them is unusable.
_REQUIRED = {"traces": ("question_id", "dataset", "kept", "drop_reason", "num_tokens"),
             "examples": ("id", "question_id", "task")}


def _atomic_write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def part_problem(path: Path, required: tuple[str, ...]) -> str | None:
    """Why a written part cannot be used, or None: the footer parses, every column of every row
    group decodes, the rows read are the rows the footer declares, the ``required`` columns
    exist. (A file cut short loses its footer; one damaged inside fails to decode.)"""
    if not path.is_file():
        return "is missing"
    try:
        pf = pq.ParquetFile(path)
        declared = pf.metadata.num_rows
        table = pf.read()
    except (OSError, ValueError, pa.ArrowException) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return f"cannot be read ({exc.__class__.__name__}: {detail})"
    if table.num_rows != declared:
        return f"has {table.num_rows} readable rows, its footer declares {declared}"
    missing = [c for c in required if c not in table.column_names]
    if missing:
        return f"lacks column(s) {missing}"
    return None


def _pair_problem(traces: Path, examples: Path) -> str | None:
    """Whether an examples part holds exactly the kept questions of its traces part."""
    t = pq.read_table(traces, columns=["question_id", "kept"])
    kept = {q for q, k in zip(t.column("question_id").to_pylist(), t.column("kept").to_pylist()) if k}
    with_examples = set(pq.read_table(examples, columns=["question_id"]).column("question_id").to_pylist())
    if with_examples != kept:
        return (f"examples part {examples.name} covers {len(with_examples)} question(s), its traces "
                f"part keeps {len(kept)}")
    return None


def foreign_entries(out: Path) -> list[str]:
    """What ``out`` holds that generation did not write (names, ``traces/x`` for one inside): its
    parts and their temporary files in ``traces/`` and ``examples/``, ``damaged/``, and the
    summary.json of a generate run. [] for an absent or empty directory."""
    if not out.is_dir():
        return [out.name] if out.exists() else []
    others = []
    for p in sorted(out.iterdir()):
        if p.name in ("traces", "examples") and p.is_dir() and not p.is_symlink():
            others += [f"{p.name}/{c.name}" for c in sorted(p.iterdir())
                       if c.is_symlink() or not c.is_file() or not (_PART.match(c.name) or _TMP.match(c.name))]
        elif not (p.name == "damaged" and p.is_dir() and not p.is_symlink()
                  or p.name == "summary.json" and p.is_file() and summary_command(out) == "generate"):
            others.append(p.name + ("/" if p.is_dir() else ""))
    return others


class PartStore:
    def __init__(self, out: str | Path):
        """Open (or create) the generate directory ``out``. Raises UserError, nothing changed,
        when ``out`` holds anything generation did not write (``foreign_entries``): resuming
        removes what an interrupted run left, which must never be a user's file."""
        self.out = Path(out)
        others = foreign_entries(self.out)
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            where = "is a file" if not self.out.is_dir() else f"holds other data ({shown})"
            raise UserError(f"{self.out} {where}, not the traces and step examples generate writes; give "
                            "generate.out (--out) a new or empty directory, or one an earlier generate run wrote "
                            "(nothing was changed)")
        self.dirs = GenerateDir(self.out)
        self.traces = self.dirs.traces
        self.examples = self.dirs.examples
        self.traces.mkdir(parents=True, exist_ok=True)
        self.examples.mkdir(parents=True, exist_ok=True)
        self._next = 1 + max((int(m.group(1)) for m in map(_PART.match, self._names(self.traces)) if m), default=-1)

    @staticmethod
    def _names(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir())

    def recover(self) -> int:
        """Remove what an interrupted run left half-done; return how many files went."""
        removed = 0
        committed = {n for n in self._names(self.traces) if _PART.match(n)}
        for folder in (self.traces, self.examples):
            for name in self._names(folder):
                orphan = folder is self.examples and _PART.match(name) and name not in committed
                if _TMP.match(name) or orphan:
                    (folder / name).unlink()
                    removed += 1
        if removed:
            log.info("removed %d file(s) left by an interrupted run", removed)
        return removed

    def quarantine_damaged(self) -> list[dict[str, str]]:
        """Check every committed part (traces and its examples) whole; move each damaged pair
        to ``damaged/`` so its questions count as not done and are generated again.

        Returns one ``{"part", "file", "problem"}`` per pair moved, for the summary. Raises
        UserError naming the file when a damaged part cannot be moved aside.
        """
        moved = []
        for name in [n for n in self._names(self.traces) if _PART.match(n)]:
            tpath, epath = self.traces / name, self.examples / name
            problem = part_problem(tpath, _REQUIRED["traces"])
            file = tpath
            if problem is None:
                problem, file = part_problem(epath, _REQUIRED["examples"]), epath
            if problem is None:
                problem, file = _pair_problem(tpath, epath), epath
            if problem is None:
                continue
            log.warning("%s %s: moving it and its pair to %s; its questions are generated again",
                        file, problem, self.dirs.damaged)
            for path in (tpath, epath):
                if not path.exists():
                    continue
                dest = self.dirs.damaged / path.parent.name / name
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    path.replace(dest)
                except OSError as exc:
                    raise UserError(
                        f"{file} {problem}, and it cannot be moved aside ({exc}); delete {tpath} and "
                        f"{epath} and rerun: their questions are then generated again"
                    ) from None
            moved.append({"part": name, "file": str(file), "problem": problem})
        return moved

    def done_ids(self) -> set[str]:
        parts = [self.traces / n for n in self._names(self.traces) if _PART.match(n)]
        if not parts:
            return set()
        return set(pq.read_table(parts, columns=["question_id"]).column("question_id").to_pylist())

    def write(self, traces: list[dict[str, Any]], examples: list[dict[str, Any]]) -> None:
        name = f"part-{self._next:05d}-{uuid.uuid4().hex[:8]}.parquet"
        self._next += 1
        _atomic_write(pa.Table.from_pylist(examples, schema=EXAMPLE_SCHEMA), self.examples / name)
        _atomic_write(pa.Table.from_pylist(traces, schema=TRACE_SCHEMA), self.traces / name)  # commit

    def _read(self, folder: Path, columns: list[str]) -> pa.Table | None:
        parts = [folder / n for n in self._names(folder) if _PART.match(n)]
        return pq.read_table(parts, columns=columns) if parts else None

    def totals(self) -> dict[str, Any]:
        """Counts over everything written so far (this run and earlier ones)."""
        t = self._read(self.traces, ["dataset", "kept", "drop_reason", "num_tokens", "steps"])
        e = self._read(self.examples, ["task"])
        if t is None:
            return {"questions": 0, "kept": 0, "dropped": 0, "dropped_by_reason": {},
                    "examples_per_task": {}, "tokens_generated": 0, "step_outcomes": {},
                    "steps": 0, "steps_without_new_passages": 0}
        steps = pc.list_flatten(t.column("steps"))
        kept = t.column("kept").to_pylist()
        reasons = [r for r, k in zip(t.column("drop_reason").to_pylist(), kept) if not k]
        per_dataset: dict[str, Counter[str]] = {}
        for ds, k in zip(t.column("dataset").to_pylist(), kept):
            per_dataset.setdefault(ds, Counter())["kept" if k else "dropped"] += 1
        return {
            "questions": t.num_rows,
            "kept": sum(kept),
            "dropped": len(reasons),
            "dropped_by_reason": dict(Counter(reason_kind(r or "") for r in reasons)),
            "dropped_reasons_detail": dict(Counter(reasons).most_common(10)),
            "per_dataset": {k: dict(v) for k, v in per_dataset.items()},
            "examples_per_task": dict(Counter(e.column("task").to_pylist())) if e is not None else {},
            "tokens_generated": int(pc.sum(t.column("num_tokens")).as_py() or 0),
            "steps": len(steps),
            "steps_without_new_passages": int(pc.sum(pc.equal(pc.struct_field(steps, "new_passages"), 0)).as_py() or 0),
            # what the loop fixed or retried in the model's raw outputs (reasoning/steps.py)
            "step_outcomes": dict(sorted(Counter(pc.list_flatten(pc.struct_field(steps, "notes")).to_pylist()).items())),
        }

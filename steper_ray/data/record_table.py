"""Question records as Arrow rows: how they travel through Ray Data to the reasoner actors.

Typed columns for what the step-wise loop and the evidence teacher use (question, answers,
gold ids, supporting facts, MuSiQue's decomposition, the 2Wiki evidences, HotpotQA's supporting
sentences, answerability); dataset-specific extras beyond those stay with the reader's record.
Paragraphs are not carried: they live in the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from steper_ray.data.records import QuestionRecord

_STRINGS = pa.list_(pa.string())
DECOMPOSITION_STEP = pa.struct([
    ("id", pa.string()), ("question", pa.string()), ("answer", pa.string()),
    ("paragraph_support_idx", pa.int64()), ("paragraph_id", pa.string()),
])
META = pa.struct([
    ("type", pa.string()), ("level", pa.string()), ("evidences", pa.list_(_STRINGS)),
    ("support_sentences", _STRINGS), ("missing_gold_titles", _STRINGS), ("answerable", pa.bool_()),
])
RECORD_SCHEMA = pa.schema([
    ("id", pa.string()), ("question", pa.string()), ("answers", _STRINGS), ("dataset", pa.string()),
    ("gold_ids", _STRINGS),
    ("supporting_facts", pa.list_(pa.struct([("title", pa.string()), ("sentence", pa.int64())]))),
    ("decomposition", pa.list_(DECOMPOSITION_STEP)),
    ("meta", META),
])


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _strings(values: Any) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def record_row(rec: QuestionRecord) -> dict[str, Any]:
    """One record as a row of RECORD_SCHEMA (values coerced to the column types)."""
    meta = rec.meta
    return {
        "id": rec.id, "question": rec.question, "answers": list(rec.answers), "dataset": rec.dataset,
        "gold_ids": list(rec.gold_ids),
        "supporting_facts": [{"title": t, "sentence": int(i)} for t, i in rec.supporting_facts],
        "decomposition": [{
            "id": _str(step.get("id")), "question": _str(step.get("question")), "answer": _str(step.get("answer")),
            "paragraph_support_idx": step["paragraph_support_idx"]
            if isinstance(step.get("paragraph_support_idx"), int) else None,
            "paragraph_id": _str(step.get("paragraph_id")),
        } for step in rec.decomposition],
        "meta": {
            "type": _str(meta.get("type")), "level": _str(meta.get("level")),
            "evidences": [_strings(e) for e in meta["evidences"]] if meta.get("evidences") is not None else None,
            "support_sentences": _strings(meta.get("support_sentences")),
            "missing_gold_titles": _strings(meta.get("missing_gold_titles")),
            "answerable": meta.get("answerable"),
        },
    }


def records_table(records: Sequence[QuestionRecord]) -> pa.Table:
    return pa.Table.from_pylist([record_row(r) for r in records], schema=RECORD_SCHEMA)


def record_from_row(row: dict[str, Any]) -> QuestionRecord:
    """Inverse of ``record_row``: absent values (nulls) are left out, as the readers leave them."""
    return QuestionRecord(
        id=row["id"], question=row["question"], answers=list(row["answers"] or []), dataset=row["dataset"] or "",
        gold_ids=list(row["gold_ids"] or []),
        supporting_facts=[(f["title"], int(f["sentence"])) for f in row["supporting_facts"] or []],
        decomposition=[{k: v for k, v in step.items() if v is not None} for step in row["decomposition"] or []],
        meta={k: v for k, v in (row["meta"] or {}).items() if v is not None},
    )


def records_from_table(table: pa.Table) -> list[QuestionRecord]:
    return [record_from_row(row) for row in table.to_pylist()]

"""Corpus extraction (pooled question paragraphs) and corpus files, deduplicated on title+text."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from steper_ray.data.paths import resolve_data_path
from steper_ray.data.readers import iter_json_records
from steper_ray.data.records import BadRecord, Passage, QuestionRecord, passage_id
from steper_ray.errors import DataError

__all__ = ["extract_corpus", "passage_id", "read_corpus"]


def _dedup(passages: Iterable[Passage]) -> list[Passage]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in passages:
        key = (p.title, p.text)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def extract_corpus(records: Iterable[QuestionRecord]) -> list[Passage]:
    """Pool every question's paragraphs, first occurrence first, duplicates removed."""
    return _dedup(p for r in records for p in r.passages)


def _corpus_entry(item: Any) -> Passage:
    if not isinstance(item, dict):
        raise ValueError(f"entry is a JSON {type(item).__name__}, not an object")
    title = item.get("title", "")
    text = item.get("text", item.get("contents", item.get("paragraph_text")))
    if not isinstance(title, str):
        raise ValueError("field 'title' is not a string")
    if isinstance(text, list):
        text = " ".join(s.strip() for s in text if isinstance(s, str) and s.strip())
    if not isinstance(text, str) or not text.strip():
        raise ValueError("field 'text' is missing or empty")
    pid = item.get("id")
    pid = str(pid) if pid is not None else passage_id(title, text.strip())
    return Passage(pid, title, text.strip())


def read_corpus(path: str | Path) -> tuple[list[Passage], list[BadRecord]]:
    """Read a corpus file: JSONL or JSON list of ``{id?, title, text}``, or a JSON dict
    ``title -> sentences``. Ids are kept when given, else derived from title+text."""
    file = resolve_data_path(path)
    with file.open(encoding="utf-8") as fh:
        first = fh.read(4096).lstrip()[:1]
    passages: list[Passage] = []
    bad: list[BadRecord] = []
    if first == "{":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = None  # JSON Lines: one object per line
        if isinstance(data, dict) and not {"title", "text"} <= set(data):
            for i, (title, sents) in enumerate(data.items(), start=1):
                try:
                    passages.append(_corpus_entry({"title": title, "text": sents}))
                except ValueError as exc:
                    bad.append(BadRecord(str(path), i, title, str(exc)))
            return _checked(path, passages, bad)
    for line, item, error in iter_json_records(file):
        if error is None:
            try:
                passages.append(_corpus_entry(item))
                continue
            except ValueError as exc:
                error = str(exc)
        rid = item.get("id") if isinstance(item, dict) else None
        bad.append(BadRecord(str(path), line, rid, error))
    return _checked(path, passages, bad)


def _checked(path: str | Path, passages: list[Passage], bad: list[BadRecord]) -> tuple[list[Passage], list[BadRecord]]:
    if not passages:
        raise DataError(f"{path} holds no usable passages ({len(bad)} bad entries); expected "
                        "JSONL of {title, text} or a JSON dict title -> sentences")
    return _dedup(passages), bad

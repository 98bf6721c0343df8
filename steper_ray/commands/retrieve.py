"""`steper-ray retrieve`: query a saved index with one query or a file of queries."""

from __future__ import annotations

import json
from pathlib import Path

from steper_ray.errors import DataError
from steper_ray.retrieval import Hit, load_index


def read_queries(path: str | Path) -> list[str]:
    """JSON Lines with a `question` (or `query`) field, or plain text, one query a line."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"queries file {file} does not exist")
    queries = []
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{lineno}: invalid JSON ({exc.msg})") from None
            text = obj.get("question", obj.get("query")) if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{file}:{lineno}: no 'question' (or 'query') string field")
            queries.append(text.strip())
        else:
            queries.append(line)
    if not queries:
        raise DataError(f"{file} holds no queries")
    return queries


def run_retrieve(index: str | Path, queries: list[str], k: int) -> list[tuple[str, list[Hit]]]:
    retriever = load_index(index)
    return list(zip(queries, retriever.search(queries, k)))

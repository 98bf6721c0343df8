"""`steper-ray retrieve`: query a saved index with one query or a file of queries."""

from __future__ import annotations

import json
from pathlib import Path

from steper_ray.data.textfile import iter_lines
from steper_ray.errors import DataError
from steper_ray.retrieval import Hit, load_index


def read_queries(path: str | Path) -> list[str]:
    """JSON Lines with a `question` (or `query`) field, or plain text, one query a line.

    Opened by ``steper_ray.data.textfile`` (gzip, BOM, "\n"/"\r\n" line ends only), so there
    is one result per non-blank input line. Raises DataError naming the line for a line that is
    not UTF-8, not JSON or has no query, and for a missing or empty file.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"queries file {file} does not exist")
    queries = []
    for line in iter_lines(file):
        if line.text is None:
            raise DataError(f"{file}:{line.number}: {line.error}; save the file as UTF-8")
        text = line.text.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{line.number}: invalid JSON ({exc.msg})") from None
            query = obj.get("question", obj.get("query")) if isinstance(obj, dict) else None
            if not isinstance(query, str) or not query.strip():
                raise DataError(f"{file}:{line.number}: no 'question' (or 'query') string field")
            queries.append(query.strip())
        else:
            queries.append(text)
    return queries


def run_retrieve(index: str | Path, queries: list[str], k: int) -> list[tuple[str, list[Hit]]]:
    retriever = load_index(index)
    return list(zip(queries, retriever.search(queries, k)))

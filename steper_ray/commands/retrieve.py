"""`steper-ray retrieve`: query a saved index with one query or a file of queries."""

from __future__ import annotations

import json
from pathlib import Path

from steper_ray.data.textfile import iter_lines
from steper_ray.errors import DataError
from steper_ray.retrieval import Hit, load_index

SHOWN_BAD_LINES = 5  # bad query lines named in the error; the rest are counted


def read_queries(path: str | Path) -> list[str]:
    """JSON Lines with a `question` (or `query`) field, or plain text, one query a line.

    Opened by ``steper_ray.data.textfile`` (gzip, BOM, "\n"/"\r\n" line ends only), so there
    is one result per non-blank input line. Raises DataError for a missing or empty file, and,
    after reading the whole file, one DataError naming every line that is not UTF-8, not JSON
    or has no query (the first ``SHOWN_BAD_LINES`` of them): nothing is searched, because a
    skipped line would shift every later result against its input line.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"queries file {file} does not exist")
    queries: list[str] = []
    bad: list[str] = []
    for line in iter_lines(file):
        if line.text is None:
            bad.append(f"{file}:{line.number}: {line.error}; save the file as UTF-8")
            continue
        text = line.text.strip()
        if not text.startswith("{"):
            queries.append(text)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            bad.append(f"{file}:{line.number}: invalid JSON ({exc.msg})")
            continue
        query = obj.get("question", obj.get("query")) if isinstance(obj, dict) else None
        if not isinstance(query, str) or not query.strip():
            bad.append(f"{file}:{line.number}: no 'question' (or 'query') string field")
            continue
        queries.append(query.strip())
    if len(bad) == 1:
        raise DataError(bad[0])
    if bad:
        more = f"; and {len(bad) - SHOWN_BAD_LINES} more" if len(bad) > SHOWN_BAD_LINES else ""
        raise DataError(f"{len(bad)} of {len(bad) + len(queries)} query lines are bad, nothing was searched: "
                        + "; ".join(bad[:SHOWN_BAD_LINES]) + more)
    return queries


def run_retrieve(index: str | Path, queries: list[str], k: int) -> list[tuple[str, list[Hit]]]:
    retriever = load_index(index)
    return list(zip(queries, retriever.search(queries, k)))

"""`steper-ray retrieve`: query a saved index with one query or a file of queries."""

from __future__ import annotations

import json
from pathlib import Path

from steper_ray.data.textfile import first_char, iter_lines, open_bytes
from steper_ray.errors import DataError
from steper_ray.retrieval import Hit, load_index

SHOWN_BAD_LINES = 5  # bad query lines named in the error; the rest are counted
QUERY_LINES = ("a queries file holds one query per line: plain text (not starting with '{'), or a JSON "
               "object with a 'question' (or 'query') string")


def read_queries(path: str | Path) -> list[str]:
    """JSON Lines with a `question` (or `query`) field, or plain text, one query a line.

    Opened by ``steper_ray.data.textfile`` (gzip, BOM, "\n"/"\r\n" line ends only), so there
    is one result per non-blank input line. Raises DataError for a missing or empty file, for a
    JSON list (the fix converts it to JSON Lines), and, after reading the whole file, one
    DataError naming every line that is not UTF-8, not JSON or has no query (the first
    ``SHOWN_BAD_LINES`` of them): nothing is searched, because a skipped line would shift every
    later result against its input line.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"queries file {file} does not exist; check the path")
    if first_char(file) == "[":
        _refuse_json_list(file)
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
            bad.append(f"{file}:{line.number}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        query = obj.get("question", obj.get("query")) if isinstance(obj, dict) else None
        if not isinstance(query, str):
            bad.append(f"{file}:{line.number}: no 'question' (or 'query') string field")
        elif not query.strip():
            bad.append(f"{file}:{line.number}: the query is empty")
        else:
            queries.append(query.strip())
    if bad:
        more = f"; and {len(bad) - SHOWN_BAD_LINES} more" if len(bad) > SHOWN_BAD_LINES else ""
        lines = "line is" if len(bad) == 1 else "lines are"
        raise DataError(f"{len(bad)} of {len(bad) + len(queries)} query {lines} bad, nothing was searched: "
                        + "; ".join(bad[:SHOWN_BAD_LINES]) + more + f". {QUERY_LINES}")
    return queries


def _refuse_json_list(file: Path) -> None:
    """Raise DataError when the whole file is one JSON list (one query per line is the format)."""
    with open_bytes(file) as fh:
        try:
            whole = json.load(fh)
        except (ValueError, UnicodeDecodeError):
            return  # a plain-text query that starts with "["
    if isinstance(whole, list):
        target = file.with_name(f"{file.stem}.queries.jsonl")  # never the input's own name
        raise DataError(f"{file} is a JSON list; {QUERY_LINES}; convert it with `jq -c '.[]' {file} > {target}`")


def run_retrieve(index: str | Path, queries: list[str], k: int) -> list[tuple[str, list[Hit]]]:
    retriever = load_index(index)
    return list(zip(queries, retriever.search(queries, k)))

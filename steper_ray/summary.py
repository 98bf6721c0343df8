"""Each command ends by writing ``summary.json`` into its output directory; later commands
(ablate, compare, report) read those summaries back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_summary(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)  # readers never see a half-written summary
    return path


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (RFC 8259: object, array, string, number, ...)."""
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "null"


def read_summary(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``. Raises ValueError saying what is wrong with it (unreadable,
    not JSON, not an object) for the caller to name the file and the fix."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"does not read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"holds a JSON {json_type(data)}, not an object")
    return data


def summary_command(out: Path) -> str | None:
    """The ``command`` of ``out/summary.json`` (None when absent, unreadable or unnamed): whose
    output a directory is."""
    try:
        command = read_summary(Path(out) / "summary.json").get("command")
    except ValueError:
        return None
    return command if isinstance(command, str) else None

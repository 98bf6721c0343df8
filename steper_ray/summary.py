"""Each command ends by writing ``summary.json`` into its output directory."""

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

"""The run report: ``<run_dir>/report.html``, one self-contained page (no network).

It shows the stage table with times, retrieval recall, kept and dropped traces by reason, the
sigma and per-task loss curves, dev metrics per dataset and mode, and a trace browser (every
question with its steps, passages with the gold ones marked, and its answer against the gold,
filterable by source, dataset, kept/dropped and correct/wrong). ``gather.py`` reads the run
into plain data, ``render.py`` turns that into HTML; ``write_report`` does both.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from pathlib import Path

from steper_ray.errors import UserError
from steper_ray.layout import RunLayout
from steper_ray.report.gather import MAX_BROWSER_QUESTIONS, gather_report
from steper_ray.report.render import render_report

log = logging.getLogger(__name__)

__all__ = ["gather_report", "render_report", "write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 max_questions: int = MAX_BROWSER_QUESTIONS) -> Path:
    """Build the report of ``run_dir`` into ``out`` (default ``RunLayout.report``, i.e.
    ``<run_dir>/report.html``), atomically: a reader never sees half a page. Returns its path.

    Raises UserError when ``run_dir`` is not a run directory or ``out`` cannot be written.
    """
    page = render_report(gather_report(run_dir, max_questions))
    path = Path(out) if out is not None else RunLayout.of_run(run_dir).report
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write the report to {path} ({exc.strerror or exc}); pass --out FILE "
                        "with a writable path") from None
    log.info("run report written to %s (%d bytes)", path, len(page.encode("utf-8")))
    return path


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
from steper_ray.report.gather import (
    MAX_BROWSER_QUESTIONS,
    check_run_dir,
    gather_report,
    gather_run,
)
from steper_ray.report.render import REPORT_MARK, render_report

log = logging.getLogger(__name__)

__all__ = ["gather_report", "render_report", "write_report"]


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its title starts the same way)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2048)
    except OSError:
        return False
    return REPORT_MARK.encode() in head


def check_report_target(path: Path) -> None:
    """Raise UserError (nothing written) unless ``path`` can take the report: a file name whose
    file, if it exists, is an earlier report, never another file it would overwrite."""
    if not path.name or path.name in (".", "..") or path.is_dir():
        raise UserError(f"--out {str(path) or repr('')} is not a file name; pass --out FILE, e.g. "
                        "--out report.html")
    if path.exists() and not is_report(path):
        raise UserError(f"{path} exists and is not a steper-ray report; it would be overwritten, so "
                        "pass --out with a new file name (nothing was changed)")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{path.parent} is a file, so {path.name} cannot be written inside it; pass "
                        "--out FILE in a directory")


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 max_questions: int = MAX_BROWSER_QUESTIONS) -> Path:
    """Build the report of ``run_dir`` into ``out`` (default ``RunLayout.report``, i.e.
    ``<run_dir>/report.html``), atomically: a reader never sees half a page. Returns its path.

    Raises UserError when ``run_dir`` is not a run directory or ``out`` cannot be written.
    """
    layout = RunLayout.of_run(run_dir)
    check_run_dir(layout)
    path = Path(out) if out is not None else layout.report
    check_report_target(path)
    page = render_report(gather_run(layout, max_questions))  # the layout checked above, not loaded again
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "replace": a lone surrogate in the data (JSON "\ud800") shows as U+FFFD, never fails the page.
        data = page.encode("utf-8", errors="replace")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write the report to {path} ({exc.strerror or exc}); pass --out FILE "
                        "with a writable path") from None
    log.info("run report written to %s (%d bytes)", path, len(data))
    return path


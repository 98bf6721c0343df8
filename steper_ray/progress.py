"""Progress of the running stage: what jobs report (done / total, in their unit) and where it
shows. Jobs call ``progress()`` and report to whatever is active: the console's one progress
line per stage (``steper_ray.console``) when a command runs, else log lines (library use,
tests), at most one every ``LOG_EVERY_S`` seconds and one at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class Progress:
    """done / total of one stage in one unit (questions, steps, datasets). This base logs."""

    def __init__(self, stage: str = "") -> None:
        self.stage = stage
        self.unit = "items"
        self.total: int | None = None
        self.done = 0
        self.t0 = time.perf_counter()
        self._base = 0  # done before this run started (resume): not counted in the rate
        self._last_log = 0.0

    def start(self, total: int | None, unit: str, done: int = 0, since: float | None = None) -> None:
        """Begin (or re-begin, in a new unit) counting; ``done`` were finished by an earlier run.
        ``since``: return to a count begun at that ``time.perf_counter()`` after a nested job
        reported in its own unit (``done`` then counts in the rate)."""
        self.total, self.unit, self.done, self._base = total, unit, done, (done if since is None else 0)
        self.t0 = time.perf_counter() if since is None else since
        self.show()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        self.show()

    @property
    def rate(self) -> float:
        """Units per second in this run."""
        return (self.done - self._base) / max(time.perf_counter() - self.t0, 1e-9)

    def line(self) -> str:
        """``stage  done/total unit  rate unit/s  ETA`` as one line of text."""
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and self.rate > 0 and self.done < self.total:
            eta = f", ETA {format_seconds((self.total - self.done) / self.rate)}"
        return (f"{self.stage:<15} {self.done}{total} {self.unit}, {self.rate:.2f} {self.unit}/s, "
                f"{format_seconds(time.perf_counter() - self.t0)}{eta}")

    def reached(self) -> str:
        """`` at done/total unit`` for a stage that stopped before its end ('' before any)."""
        if not self.done:
            return ""
        total = f"/{self.total}" if self.total is not None else ""
        return f" at {self.done}{total} {self.unit}"

    def show(self) -> None:
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if finished or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.info("%s", self.line())

    def close(self, status: str = "done") -> None:
        """The stage ended (``done``, ``failed``, ``skipped``)."""

    def relabel(self, stage: str) -> None:
        """A new part of the same stage begins (e.g. ablate's next mode): its own label and count."""
        self.stage = stage
        self.start(None, "items")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


_current: Progress = Progress()


def progress() -> Progress:
    """The active stage's progress (a logging one outside a command)."""
    return _current


@contextmanager
def active(p: Progress) -> Iterator[Progress]:
    """Make ``p`` what ``progress()`` returns for the duration."""
    global _current
    previous, _current = _current, p
    try:
        yield p
    finally:
        _current = previous

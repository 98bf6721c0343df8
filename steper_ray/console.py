"""The quiet console of a command: one progress line per stage, everything else in a log file.

While a command runs (``Console.session``), the process's stdout and stderr (file descriptors
1 and 2, so also C libraries, child processes and the worker output Ray forwards to the driver)
and every log record go to ``<run_dir>/logs/<command>.log``; each stage (``Console.stage``)
switches them to its own ``logs/<stage>.log``. The terminal only gets what the console writes
through its own copy of the original stdout: one progress line per stage (tqdm on a terminal:
stage, done/total, rate, ETA; elsewhere one line when the stage ends and one a minute while it
runs), the tail of the log and its path when a stage fails, and the summary, last.
``--verbose`` (``Console(verbose=True)``) leaves the terminal as it is and logs at DEBUG.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

from steper_ray.errors import UserError
from steper_ray.progress import Progress, active, format_seconds

log = logging.getLogger(__name__)

TAIL_LINES = 20  # of a failed stage's log
LINE_EVERY_S = 60.0  # progress lines when the output is not a terminal
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of a text file (progress bars' carriage returns
    resolved to what a terminal would show), from its last ``===== `` header on: a log is
    appended run after run, and a failure shows its own run's lines only."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    shown = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    headers = [i for i, line in enumerate(shown) if line.startswith("===== ")]
    if headers:
        shown = shown[headers[-1] + 1:]
    return [line for line in shown if line.strip()][-lines:]


def _terminal(stream: IO[str], fd: int) -> IO[str]:
    """A stream to where ``stream`` writes now that survives redirecting ``fd``: a duplicate of
    the descriptor when ``stream`` is it, else ``stream`` itself (e.g. a test's capture)."""
    try:
        if stream.fileno() == fd:
            return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        pass
    return stream


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


@contextmanager
def _redirect_fds(path: Path) -> Iterator[None]:
    """Point descriptors 1 and 2 at ``path`` (appending), and ``sys.stdout`` / ``sys.stderr``
    at them (they may be other objects, e.g. a test's capture); put back what was there after."""
    _flush_std()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    saved = (os.dup(1), os.dup(2))
    streams = (sys.stdout, sys.stderr)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        # On descriptors 1 and 2 themselves (closefd=False), never closed: a logging handler made
        # during the stage keeps its sys.stderr (Ray Data's does) and must not find it closed in
        # a later stage; writing to descriptor 2, it follows wherever 2 points then.
        sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        yield
    finally:
        _flush_std()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


class StageFailed(Exception):
    """Marks an exception whose stage already showed its log tail; ``log`` is that log."""


class _TerminalProgress(Progress):
    """One tqdm line on a terminal, rewritten in place and kept when the stage ends."""

    WAITING = "{desc} running [{elapsed}]"
    COUNTING = "{desc} {n_fmt}{unit} [{elapsed}, {rate_fmt}]"
    BAR = "{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}]"

    def __init__(self, stage: str, out: IO[str]):
        super().__init__(stage)
        from tqdm import tqdm

        # smoothing 0 and n set directly: the rate is this run's done / elapsed
        self._bar = tqdm(total=None, desc=f"{stage:<15}", file=out, dynamic_ncols=True, leave=True,
                         smoothing=0, bar_format=self.WAITING)

    def start(self, total: int | None, unit: str, done: int = 0, since: float | None = None) -> None:
        self._bar.reset(total=total)
        self._bar.initial = done if since is None else 0
        if since is not None:  # tqdm times with time.time(), ``since`` is a perf_counter() reading
            self._bar.start_t = since + (time.time() - time.perf_counter())
        super().start(total, unit, done, since)

    def show(self) -> None:
        bar = self._bar
        bar.total = self.total
        bar.unit = f" {self.unit}"
        bar.bar_format = self.BAR if self.total else self.COUNTING
        bar.n = self.done
        bar.refresh()

    def relabel(self, stage: str) -> None:
        """Keep the finished part's line as it is and start a new one below it."""
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=None, desc=f"{stage:<15}", file=self._bar.fp, dynamic_ncols=True, leave=True,
                         smoothing=0, bar_format=self.WAITING)
        super().relabel(stage)

    def close(self, status: str = "done") -> None:
        bar = self._bar
        if status != "done" or bar.bar_format == self.WAITING:
            at = self.reached() if status != "done" else ""
            bar.bar_format = "{desc} " + (status + at).replace("{", "{{").replace("}", "}}") + " [{elapsed}]"
        bar.refresh()
        bar.close()


class _LineProgress(Progress):
    """Plain lines for a log or a pipe: one a minute while running, one when the stage ends."""

    def __init__(self, stage: str, out: IO[str]):
        super().__init__(stage)
        self._out = out
        self._last = time.perf_counter()

    def show(self) -> None:
        if time.perf_counter() - self._last >= LINE_EVERY_S:
            self._last = time.perf_counter()
            self._out.write(self.line() + "\n")
            self._out.flush()

    def relabel(self, stage: str) -> None:
        """The finished part's last count as a line of its own, then the new part."""
        if self.done:
            self._out.write(self.line() + "\n")
            self._out.flush()
        super().relabel(stage)
        self._last = time.perf_counter()

    def close(self, status: str = "done") -> None:
        if status == "done" and self.done:
            text = self.line()
        else:
            text = f"{self.stage:<15} {status}{self.reached()} ({format_seconds(time.perf_counter() - self.t0)})"
        self._out.write(text + "\n")
        self._out.flush()


class Console:
    """The terminal of one command. ``verbose``: leave stdout/stderr and logging as they are."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.out = _terminal(sys.stdout, 1)
        self.err = _terminal(sys.stderr, 2)
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._hidden: list[logging.Handler] = []

    def print(self, text: str = "", err: bool = False) -> None:
        stream = self.err if err else self.out
        stream.write(text + "\n")
        stream.flush()

    @contextmanager
    def _logging_to(self, path: Path, title: str) -> Iterator[None]:
        """Log records, warnings and (quiet) descriptors 1 and 2 into ``path``.

        Raises UserError when the log file cannot be created (run_dir a file, no permission)."""
        root = logging.getLogger()
        if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve()
               for h in root.handlers):
            # A one-stage command's session already logs (and redirects output) here: a second
            # handler would write every record twice.
            yield
            return
        handler = open_log(path)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        # Console handlers would write into the redirected stderr, i.e. this file a second time.
        hidden = [] if self.verbose else [h for h in root.handlers if type(h) is logging.StreamHandler]
        for h in hidden:
            root.removeHandler(h)
        root.addHandler(handler)
        level = root.level
        root.setLevel(min(level or logging.WARNING, handler.level))  # the file gets INFO even if the caller logs less
        handler.stream.write(f"\n===== {title} ({time.strftime('%Y-%m-%d %H:%M:%S')}) =====\n")
        handler.flush()
        try:
            with nullcontext() if self.verbose else _redirect_fds(path):
                yield
        finally:
            root.setLevel(level)
            root.removeHandler(handler)
            handler.close()
            for h in hidden:
                root.addHandler(h)

    @contextmanager
    def session(self, command: str, log_file: Path) -> Iterator[None]:
        """The whole command: its log takes what no stage claims (start-up, Ray's shutdown)."""
        logging.captureWarnings(True)
        try:
            with self._logging_to(log_file, f"steper-ray {command}"):
                yield
        finally:
            logging.captureWarnings(False)

    @contextmanager
    def stage(self, name: str, log_file: Path) -> Iterator[Progress]:
        """One stage: its progress line and its log. On failure the log's tail and path are
        shown and the exception re-raised as the cause of a ``StageFailed``."""
        bar: Progress = (_TerminalProgress if self.tty else _LineProgress)(name, self.out)
        failure: BaseException | None = None
        try:
            with self._logging_to(log_file, f"stage {name}"), active(bar):
                try:
                    yield bar
                except BaseException as exc:
                    failure = exc
                    if isinstance(exc, UserError):  # a mistake to fix: its message, no traceback
                        log.error("stage %s failed: %s", name, exc)
                    elif not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        log.exception("stage %s failed", name)
                    raise
        finally:
            status = "done" if failure is None else (
                "interrupted" if isinstance(failure, KeyboardInterrupt) else "failed")
            bar.close(status)
        # not reached on failure: the exception propagates from the with block above

    def show_failure(self, name: str, log_file: Path, user_error: bool = False) -> None:
        """The last lines of a failed stage's log and where the whole log is. For a user error
        the log's own record of it is left out: the caller prints the message next."""
        lines = tail(log_file)
        if user_error:
            marker = f"stage {name} failed: "
            cut = next((i for i, line in enumerate(lines) if marker in line), len(lines))
            lines = lines[:cut]
        if lines:
            self.print(f"--- last {len(lines)} lines of {log_file} ---", err=True)
            for line in lines:
                self.print(f"  {line}", err=True)
        self.print(f"{name} failed; full log: {log_file}", err=True)


def open_log(path: Path) -> logging.FileHandler:
    """A handler appending to ``path`` (its directory created); UserError when that fails,
    e.g. run_dir names a file or a directory without write permission."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the log {path} ({exc.strerror or exc}); logs go to "
                        "<run_dir>/logs/: set run_dir=DIR to a directory you can write") from None


def run_stage(console: Console | None, name: str, log_file: Path, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` as stage ``name`` of ``console`` (no console: plainly, with logged
    progress). A failure shows the log's tail, then raises ``StageFailed`` from the error."""
    if console is None:
        return fn(*args)
    try:
        with console.stage(name, log_file):
            return fn(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        console.show_failure(name, log_file, user_error=isinstance(exc, UserError))
        raise StageFailed(str(log_file)) from exc

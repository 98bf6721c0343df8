"""Directories that appear whole or not at all (indexes, prepared models), and the rule that a
build only ever replaces a directory of its own kind: never one that holds other data."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from steper_ray.errors import UserError


def foreign_entries(out: Path, own: Callable[[str], bool]) -> list[str]:
    """Names directly inside ``out`` that ``own`` does not claim (``out`` itself when it is a
    file); [] when ``out`` is absent or empty."""
    out = Path(out)
    if not out.exists():
        return []
    if not out.is_dir():
        return [out.name]
    return sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if not own(p.name))


def refuse_foreign(out: Path, own: Callable[[str], bool], what: str) -> None:
    """Raise UserError (exit 2, nothing changed) when ``out`` holds anything that is not ``what``:
    a build swaps its whole directory in, so it must never land on someone else's files."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"{out} is a file, not a directory; {what} is a directory, so choose a new "
                        "or empty directory path (nothing was changed)")
    others = foreign_entries(out, own)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise UserError(f"{out} holds other data ({shown}), not only {what}; it would be replaced whole, "
                        "so choose a new or empty directory (nothing was changed)")


def _stray(path: Path, kind: str | frozenset[str]) -> bool:
    """Whether ``path`` is not what an output directory holds under its name: a link (writing
    would go through it), a file where a directory belongs or the reverse, or a directory
    holding names outside ``kind`` (a frozenset of allowed child names)."""
    if path.is_symlink():
        return True
    if kind == "file":
        return not path.is_file()
    if not path.is_dir():
        return True
    return isinstance(kind, frozenset) and any(child.name not in kind or child.is_symlink() for child in path.iterdir())


def own_out_dir(out: Path, entries: Mapping[str, str | frozenset[str]] | None, what: str,
                written_here: Callable[[Path], bool], logs: Path | None = None) -> Path:
    """Create ``out`` for a command that writes ``what`` into it file by file (a rerun or a
    resume writes into its own earlier output). Refused with UserError, nothing changed, when
    ``out`` is a file or cannot be created, when it would hold the run's log directory ``logs``
    (``out`` is the run directory or above it), or when it holds anything and either an entry
    is not one of ``entries`` (name -> "file", "dir", or the names a directory may hold; None:
    any name) or ``written_here(out)`` does not recognise it as this command's output (its
    summary or marker file). Returns ``out``."""
    out = Path(out)
    if logs is not None and Path(logs).resolve().is_relative_to(out.resolve()):
        # checked first: the command has already written its own log there
        raise UserError(f"{out} is the run directory or holds it (the run's logs are in {logs}); give "
                        f"{what} a directory of its own (nothing was changed)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; {what} go into a directory, so choose a new or empty directory "
                        "(nothing was changed)")
    present = sorted(out.iterdir()) if out.is_dir() else []
    others = [p.name + ("/" if p.is_dir() else "") for p in present
              if entries is not None and (p.name not in entries or _stray(p, entries[p.name]))
              or entries is None and p.is_symlink()]
    if present and not others and not written_here(out):
        others = [p.name + ("/" if p.is_dir() else "") for p in present]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise UserError(f"{out} holds other data ({shown}), not {what} this command wrote; choose a new or "
                        "empty directory (nothing was changed)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out} ({exc.strerror or exc}); give a writable directory "
                        "path (nothing was changed)") from None
    return out


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Build into a temporary sibling and swap it in only when complete, so an interrupted
    build never leaves a half-written directory where a good one (or nothing) was. Callers
    check first (``refuse_foreign``) that ``out`` is theirs to replace."""
    out = Path(os.path.abspath(out))  # '.' or 'x/..' has no name to make a sibling of
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result should read like any new directory
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

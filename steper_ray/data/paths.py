"""Resolve data paths, including ``sample:<file>`` for the samples bundled with the package."""

from __future__ import annotations

from pathlib import Path

from steper_ray.errors import DataError

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_PREFIX = "sample:"


def available_samples() -> list[str]:
    return sorted(
        f"{SAMPLE_PREFIX}{p.relative_to(SAMPLE_DIR).as_posix()}"
        for p in SAMPLE_DIR.rglob("*")
        if p.is_file() and p.suffix in {".json", ".jsonl"}
    )


def resolve_data_path(spec: str | Path, what: str = "data file") -> Path:
    """A path as given, or a bundled sample; a missing file is a DataError naming the fix.

    ``what`` names the file in the message: a ``"corpus file"`` is not pointed to the bundled
    dataset samples, which are questions, not passages; a ``"data.corpus file"`` is pointed to
    the settings that need no file.
    """
    text = str(spec)
    if text.startswith(SAMPLE_PREFIX):
        path = SAMPLE_DIR / text[len(SAMPLE_PREFIX) :]
        if not path.is_file():
            raise DataError(
                f"no bundled sample {text!r}; available: {', '.join(available_samples())}"
            )
        return path
    path = Path(text).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a data file inside it")
    if not path.is_file():
        hint = (" (or data.corpus=questions or data.corpus=pooled, which need no file)" if what == "data.corpus file"
                else "" if what == "corpus file" else f" (or use a bundled sample such as {available_samples()[0]!r})")
        raise DataError(f"{what} {path} does not exist; check the path{hint}")
    return path

"""Opening a user's text file: the one place that knows about compression, byte-order marks,
encodings and line ends, so every reader (datasets, corpora, query files) follows the same rules.

- gzip (by its magic bytes, whatever the file is called) is decompressed transparently; other
  compressions and binary files are refused with the fix;
- a UTF-8 byte-order mark is skipped; UTF-16/UTF-32 files are refused, naming the encoding;
- lines end at "\\n" (a "\\r" before it is dropped), never at the other characters
  ``str.splitlines`` splits on (U+2028, U+0085, form feeds, ...), which JSON strings may hold;
- a line that is not UTF-8 is returned with its reason (the caller counts it as a bad record),
  but a file where most lines are not UTF-8 is in another encoding: a DataError naming it;
- a file with nothing but blank lines is a DataError saying the file is empty.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from steper_ray.errors import DataError

UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
# Longest BOM first: UTF-32-LE starts with the UTF-16-LE BOM.
_WIDE_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
)
_REFUSED_MAGIC = (
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PAR1", "a Parquet file"),
)
# Lines looked at before judging the whole file's encoding (and again at the end of the file).
ENCODING_WINDOW = 32


@dataclass(frozen=True)
class Line:
    """One non-blank line: its 1-based number and text, or why it could not be decoded."""

    number: int
    text: str | None  # without its line end; None when the bytes are not UTF-8
    error: str | None = None


def _convert_hint(source: str, encoding: str) -> str:
    path = Path(source)
    target = path.with_name(f"{path.stem}.utf8{path.suffix}")  # beside the file, not in the cwd
    return f"convert it to UTF-8, e.g. `iconv -f {encoding} -t UTF-8 {source} > {target}`"


def guess_encoding(sample: bytes) -> str:
    """A best guess at the legacy encoding of bytes that are not UTF-8, for the error message:
    many adjacent high bytes suggest an East Asian double-byte encoding, isolated ones a
    Western single-byte one. A hint for the user, never used to decode."""
    high = [b >= 0x80 for b in sample]
    pairs = sum(1 for a, b in pairwise(high) if a and b)
    if sum(high) and pairs * 2 >= sum(high):
        for codec, name in (("gb18030", "GB18030"), ("shift_jis", "SHIFT_JIS"), ("euc-kr", "EUC-KR")):
            try:
                sample.decode(codec)
                return name
            except UnicodeDecodeError:
                continue
    return "WINDOWS-1252"


def _refuse_head(head: bytes, source: str) -> None:
    """Raise DataError when the first bytes (after decompression) show this is no UTF-8 text."""
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            codec = name.split(" ")[0]
            raise DataError(
                f"{source} is encoded as {name}, not UTF-8 (it starts with a {codec} byte-order "
                f"mark, as files saved by Notepad or PowerShell often are); "
                f"{_convert_hint(source, codec)}"
            )
    if b"\x00" in head:
        raise DataError(
            f"{source} holds NUL bytes: it is UTF-16/UTF-32 text without a byte-order mark or a "
            f"binary file, not UTF-8 text; {_convert_hint(source, 'UTF-16')} or check the path"
        )


@contextmanager
def open_bytes(path: str | Path, source: str | None = None) -> Iterator[BinaryIO]:
    """The file's bytes, gzip-decompressed when it is gzip, positioned after a UTF-8 BOM.

    Raises DataError for another compression, a binary file, a UTF-16/32 file or a damaged
    gzip stream (also while the caller reads).
    """
    path = Path(path)
    source = source or str(path)
    with path.open("rb") as raw:
        magic = raw.read(8)
        raw.seek(0)
        gzipped = magic.startswith(_GZIP_MAGIC)
        if not gzipped:
            for prefix, what in _REFUSED_MAGIC:
                if magic.startswith(prefix):
                    fix = "convert it to" if what == "a Parquet file" else "decompress it, or give"
                    raise DataError(f"{source} is {what}, not a text file; {fix} a UTF-8 text file (JSON, "
                                    "JSON Lines, a TSV corpus or plain-text queries); gzip is read as is")
        fh: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw  # type: ignore[assignment]
        try:
            head = fh.peek(4096)[:4096]  # type: ignore[attr-defined]  # both stream types peek
            _refuse_head(head, source)
            if head.startswith(UTF8_BOM):
                fh.read(len(UTF8_BOM))
            yield fh
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"{source} is a damaged gzip file ({exc}); re-create or re-download it") from None


def first_char(path: str | Path, source: str | None = None) -> str:
    """The first non-whitespace character of the file's text ('' when there is none)."""
    with open_bytes(path, source) as fh:
        while chunk := fh.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return chr(stripped[0]) if stripped[0] < 0x80 else stripped[:4].decode("utf-8", "replace")[0]
    return ""


def _empty_error(source: str, blank_lines: int) -> DataError:
    what = f"has only {blank_lines} blank line(s)" if blank_lines else "is empty (0 bytes of text)"
    return DataError(f"{source} {what}: there is nothing to read; check that the path names the "
                     "file you meant (a gzip file is decompressed first)")


def check_utf8(path: str | Path, source: str | None = None) -> None:
    """Raise DataError when the file's text is not UTF-8, naming the line and the likely
    encoding; read in chunks, never whole. For a streamed JSON document that failed to parse:
    bytes in another encoding are the more useful thing to report than the JSON error."""
    source = source or str(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    utf8_before = False  # non-ASCII text decoded as UTF-8 ahead of the bad byte
    with open_bytes(path, source) as fh:
        while True:
            chunk = fh.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.object: this chunk after the (newline-free) tail of a character the
                # decoder held back from the last one
                data, at = exc.object, exc.start
                line = lines + data.count(b"\n", 0, at)
                if utf8_before or not data[:at].isascii():
                    # converting the whole file would garble the UTF-8 it already holds
                    raise DataError(
                        f"{source} is UTF-8 text with an invalid byte (0x{data[at]:02x} on line "
                        f"{line}): fix or remove that byte there; do not convert the whole file, "
                        "whose other non-ASCII text is already UTF-8") from None
                enc = guess_encoding(data[max(0, at - 200):at + 200])
                raise DataError(
                    f"{source} is not UTF-8 text (byte 0x{data[at]:02x} on line {line} cannot be "
                    f"decoded; it looks like {enc}); {_convert_hint(source, enc)}"
                ) from None
            if not chunk:
                return
            lines += chunk.count(b"\n")
            utf8_before = utf8_before or not chunk.isascii()


# One reason for every such line, so summaries group them (the line number says where).
NOT_UTF8 = "line is not valid UTF-8"


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, NOT_UTF8


def iter_lines(path: str | Path, source: str | None = None) -> Iterator[Line]:
    """Yield the file's non-blank lines, numbered from 1, split at "\\n" (and "\\r\\n") only.

    A line that is not UTF-8 comes with ``text=None`` and the reason. Raises DataError when the
    file is empty or only blank, or when more than half of the lines read (judged after the
    first ENCODING_WINDOW lines and again at the end) are not UTF-8: then the whole file is in
    another encoding and counting each line as bad would hide that.
    """
    source = source or str(path)
    good = bad = blank = 0
    first_bad: bytes = b""
    judged = False

    def verdict() -> None:
        if bad * 2 > good + bad:
            enc = guess_encoding(first_bad)
            raise DataError(
                f"{source} is not UTF-8 text: {bad} of the {good + bad} lines read are not valid "
                f"UTF-8 (it looks like {enc}); {_convert_hint(source, enc)}"
            )

    with open_bytes(path, source) as fh:
        # Iterating a binary stream splits at b"\n" only, whatever else the text holds.
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if not raw.strip():
                blank += 1
                continue
            text, error = _decode(raw)
            if text is not None and not text.strip():  # e.g. only U+3000 ideographic spaces
                blank += 1
                continue
            if error is None:
                good += 1
            else:
                bad += 1
                first_bad = first_bad or raw
            if not judged and good + bad >= ENCODING_WINDOW:
                judged = True
                verdict()
            yield Line(number, text, error)
    if good + bad == 0:
        raise _empty_error(source, blank)
    verdict()

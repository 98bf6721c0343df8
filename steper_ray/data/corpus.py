"""Corpus extraction (pooled question paragraphs, deduplicated on title + text) and corpus
files, where a given passage id is the passage's key."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steper_ray.data.paths import resolve_data_path
from steper_ray.data.readers import iter_json_document, iter_json_records
from steper_ray.data.records import BadRecord, Passage, QuestionRecord, passage_id
from steper_ray.data.textfile import first_char, iter_lines
from steper_ray.errors import DataError
from steper_ray.summary import json_type

__all__ = ["CorpusRead", "CorpusScan", "extract_corpus", "passage_id", "read_corpus"]

log = logging.getLogger(__name__)

_TEXT_KEYS = ("text", "contents", "paragraph_text")


def _dedup(passages: Iterable[Passage]) -> list[Passage]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in passages:
        key = (p.title, p.text)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def extract_corpus(records: Iterable[QuestionRecord]) -> list[Passage]:
    """Pool every question's paragraphs, first occurrence first, duplicates removed (their ids
    come from title + text, so a duplicate is the same passage under the same id)."""
    return _dedup(p for r in records for p in r.passages)


@dataclass
class CorpusRead:
    """A corpus file read: its passages (unique ids), bad entries, and what was merged."""

    passages: list[Passage]
    bad: list[BadRecord]
    merged: int = 0  # entries without an id identical (title + text) to an earlier one
    same_text: int = 0  # passages kept under their own id whose title + text repeat another's

    def summary(self) -> dict[str, Any]:
        """Counts for the index summary: passages, bad entries by reason, merged and shared text."""
        return {
            "passages": len(self.passages),
            "bad": len(self.bad),
            "bad_reasons": dict(Counter(b.reason for b in self.bad)),
            "merged_identical_without_id": self.merged,
            "same_text_under_other_ids": self.same_text,
        }


def _corpus_entry(item: Any) -> tuple[Passage, bool]:
    """A passage and whether its id was given (else it is derived from title + text)."""
    if not isinstance(item, dict):
        raise ValueError(f"entry is a JSON {json_type(item)}, not an object")
    title = item.get("title", "")
    text = next((item[k] for k in _TEXT_KEYS if k in item), None)
    if not isinstance(title, str):
        raise ValueError("field 'title' is not a string")
    if isinstance(text, list):
        odd = [s for s in text if not isinstance(s, str)]
        if odd:  # never a sentence dropped uncounted
            raise ValueError(f"field 'text' holds a JSON {json_type(odd[0])} among its sentences, not only strings")
        text = " ".join(s.strip() for s in text if s.strip())
    if text is not None and not isinstance(text, str):
        raise ValueError(f"field 'text' is a JSON {json_type(text)}, not a string or a list of sentences")
    if text is None or not text.strip():
        raise ValueError("field 'text' is missing or empty")
    pid = item.get("id")
    if pid is None:
        return Passage(passage_id(title, text.strip()), title, text.strip()), False
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
        raise ValueError("field 'id' is not a non-empty string or integer")
    return Passage(str(pid), title, text.strip()), True


# Keys that make an object one record (a passage, or a dataset question given as a corpus)
# rather than a title -> sentences dict, unless most values are lists of sentences.
_RECORD_KEYS = (*_TEXT_KEYS, "title", "id", "question")


def _is_sentences(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def _is_title_dict(pairs: Iterable[tuple[str, Any]]) -> bool:
    """Whether an object's (key, value) pairs are ``{title: sentences}``, not one ``{id?, title,
    text}`` entry: no record key, or several keys and most values lists of sentences (so a
    passage titled "text" or "id" among others, or a bad value among them, keeps the dict a
    dict; a record's own fields are strings, with at most a text given as sentences)."""
    record_key, n, lists = False, 0, 0
    for n, (key, value) in enumerate(pairs, start=1):
        record_key = record_key or key in _RECORD_KEYS
        lists += _is_sentences(value)
    return not record_key or (n > 1 and 2 * lists > n)


def _title_dict_entries(file: Path, source: str) -> Iterator[tuple[int, Any, str | None]] | None:
    """The entries of a JSON document that starts with ``{``, streamed, or None for a JSON Lines
    file: a ``title -> sentences`` dict's entries, or the one record a pretty-printed
    ``{id?, title, text}`` document holds. Deciding reads the document once
    (``iter_json_document``); a dict's entries are then streamed from a second pass, never the
    whole document in memory."""
    if first_char(file, source) != "{":
        return None
    lines = iter_lines(file, source)
    first = next(lines)
    try:
        obj = json.loads(first.text) if first.text is not None else None
    except json.JSONDecodeError:
        obj = None  # a JSON document over several lines, or a broken first line of JSON Lines
    if isinstance(obj, dict) and not _is_title_dict(obj.items()):
        return None  # JSON Lines of {id?, title, text}
    if first.text is None:
        return None  # a broken first line of a JSON Lines file: counted there
    if obj is None and _next_line_is_object(lines):
        return None  # JSON Lines whose first line is broken: counted there, the rest read
    try:
        title_dict = _is_title_dict(iter_json_document(file, source, "pairs"))
    except DataError:
        if obj is None or not _next_line_is_object(lines):
            raise  # one document (on one line or several) that does not parse, or trails other text
        return None  # several one-line objects: JSON Lines, each entry judged on its own
    if not title_dict:  # one record spread over lines: small, read whole
        return iter([(1, dict(iter_json_document(file, source, "pairs")), None)])
    return _title_dict_stream(file, source)


def _title_dict_stream(file: Path, source: str) -> Iterator[tuple[int, Any, str | None]]:
    seen: set[str] = set()
    for i, (title, sents) in enumerate(iter_json_document(file, source, "pairs"), start=1):
        # every pair, not a dict: a title given twice is counted, not silently overwritten
        error = "duplicate title (the first entry with it is kept)" if title in seen else None
        seen.add(title)
        yield i, {"title": title, "text": sents}, error


def _next_line_is_object(lines: Iterator[Any]) -> bool:
    """Whether the next non-blank line of ``lines`` is a whole JSON object on its own (JSON
    Lines), not the inside of a document spread over several lines."""
    for line in lines:
        if line.text is None:
            return False
        if line.text.strip():
            try:
                return isinstance(json.loads(line.text), dict)
            except json.JSONDecodeError:
                return False
    return False


def _is_tsv(file: Path) -> bool:
    return file.name.lower().removesuffix(".gz").endswith(".tsv")


def _tsv_names(header: str) -> list[str]:
    """A TSV header line's column names, as ``csv`` reads them, lower case."""
    return [n.strip().lower() for n in next(csv.reader([header], delimiter="\t"))]


def _tsv_header(file: Path, source: str) -> bool:
    """Whether the file's first line is a tab-separated header naming a ``text`` column."""
    first = next(iter_lines(file, source), None)
    return bool(first and first.text and "\t" in first.text and "text" in _tsv_names(first.text))


def iter_tsv_records(file: Path, source: str) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line, record, error) from a tab-separated corpus whose first line names its
    columns (``id``, ``title``, ``text`` in any order, e.g. DPR's ``id text title`` Wikipedia
    passages); quoted fields as the ``csv`` module reads them; an empty ``id`` cell is no id (the
    passage gets a content id, as ``"id": null`` does in JSON). Raises DataError when the header
    has no ``text`` column."""
    # csv's default field limit (128 KiB) would refuse a long passage JSON Lines reads fine
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    lines = iter_lines(file, source)
    header = next(lines, None)
    names = _tsv_names(header.text) if header and header.text else []
    repeated = sorted({n for n in names if names.count(n) > 1 and n in ("id", "title", "text")})
    if repeated:  # csv would keep one of the two silently
        raise DataError(f"{source}: the TSV header names column(s) {', '.join(repeated)} more than once; "
                        "keep one of each")
    if "text" not in names:
        got = repr(header.text[:80] + ("..." if len(header.text) > 80 else "")) if header and header.text else "no readable header"
        raise DataError(f"{source}: a TSV corpus needs a first line naming its columns (id, title, "
                        f"text; 'text' at least), got {got}")
    for line in lines:
        if line.text is None:
            yield line.number, None, line.error
            continue
        try:
            fields = next(csv.reader([line.text], delimiter="\t"))
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            yield line.number, None, f"unreadable TSV line: {exc}"
            continue
        if len(fields) != len(names):
            # an id in the first column cannot be shifted by a stray tab later in the row: name it
            named = {"id": fields[0]} if names[0] == "id" and fields[0].strip() else None
            yield line.number, named, f"{len(fields)} tab-separated fields, the header names {len(names)}"
            continue
        record: dict[str, Any] = dict(zip(names, fields))
        if "id" in record and not record["id"].strip():
            record["id"] = None  # an empty cell is TSV's null: a content id, as for "id": null in JSON
        yield line.number, record, None


class CorpusScan:
    """A corpus file read one passage at a time (``passages()``), never held whole: what a
    distributed index build streams into parts. The counts (bad entries, merges, repeated text)
    are complete once ``passages()`` is exhausted.

    Formats and rules are ``read_corpus``'s. To stay streamable it remembers a 64-bit hash of each
    passage's title + text (only the ``same_text`` count depends on it; a hash collision, about
    one in 10^7 at 20M passages, miscounts one passage) and each given id exactly: about 100
    bytes per passage, ~2 GB for a 21M-passage Wikipedia dump.
    """

    def __init__(self, path: str | Path):
        self.file = resolve_data_path(path, "corpus file")
        self.source = str(path)
        self.bad: list[BadRecord] = []
        self.merged = 0
        self.same_text = 0
        self.count = 0

    def passages(self) -> Iterator[Passage]:
        """Yield every usable passage once, in file order. Raises DataError when the file is
        unreadable or, at its end, when it held no usable passage."""
        file, source = self.file, self.source
        entries = None if _is_tsv(file) else _title_dict_entries(file, source)
        items = (entries if entries is not None
                 else iter_tsv_records(file, source) if _is_tsv(file) else iter_json_records(file, source))
        seen: set[str] = set()
        contents: set[int] = set()
        questions = 0  # entries with a question: a dataset file given as a corpus
        for line, item, error in items:
            questions += isinstance(item, dict) and "question" in item
            rid = item.get("id") if isinstance(item, dict) else None
            rid = str(rid) if rid is not None else (item.get("title") if entries is not None else None)
            if error is None:
                try:
                    passage, given = _corpus_entry(item)
                except ValueError as exc:
                    error = str(exc)
                else:
                    if passage.id in seen:
                        if given:
                            error = "duplicate id (the first entry with it is kept)"
                        else:
                            self.merged += 1
                            continue
                    else:
                        seen.add(passage.id)
                        key = _content_hash(passage)
                        if key in contents:
                            self.same_text += 1
                        else:
                            contents.add(key)
                        self.count += 1
                        yield passage
                        continue
            self.bad.append(BadRecord(source, line, rid, error))
        if not self.count and not self.bad and _is_tsv(file):
            raise DataError(f"{source} holds no passages: its TSV header has no rows after it")
        # a TSV under another name, read as JSON Lines: every row but a stray JSON one is bad
        misnamed_tsv = len(self.bad) > self.count and not _is_tsv(file) and _tsv_header(file, source)
        if not self.count:
            first = "; ".join(f"line {b.line}: {b.reason}" for b in self.bad[:3])
            raise DataError(f"{source} holds no usable passages ({len(self.bad)} bad entries"
                            f"{': ' + first if first else ''}); expected JSONL or a JSON list of {{id?, title, text}}, "
                            "a JSON dict title -> sentences or a TSV (*.tsv, *.tsv.gz) with an id, title, text header"
                            + ("; its entries hold questions: a dataset file is indexed with --dataset "
                               "(index.dataset), which takes its paragraphs" if questions else "")
                            + ("; its first line looks like a TSV header: name the file *.tsv (or *.tsv.gz)"
                               if misnamed_tsv else ""))
        if misnamed_tsv:
            raise DataError(f"{source} looks like a TSV file (its first line is a TSV header) but is read as JSON "
                            f"Lines by its name: {len(self.bad)} of {len(self.bad) + self.count} entries are bad; "
                            "name the file *.tsv (or *.tsv.gz)")
        if self.bad or self.merged or self.same_text:
            log.warning("%s: %d passage(s); %d bad entr(y/ies) %s; %d identical entries without id "
                        "merged; %d passage(s) repeat another's text under their own id (kept)",
                        source, self.count, len(self.bad), dict(Counter(b.reason for b in self.bad)),
                        self.merged, self.same_text)

    def summary(self) -> dict[str, Any]:
        """``CorpusRead.summary`` of what has been read so far."""
        return {
            "passages": self.count,
            "bad": len(self.bad),
            "bad_reasons": dict(Counter(b.reason for b in self.bad)),
            "merged_identical_without_id": self.merged,
            "same_text_under_other_ids": self.same_text,
        }


def _content_hash(passage: Passage) -> int:
    digest = hashlib.blake2b(f"{passage.title}\n{passage.text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def read_corpus(path: str | Path) -> CorpusRead:
    """Read a corpus file: JSON Lines or a JSON list of ``{id?, title, text}``, a JSON dict
    ``title -> sentences``, or a TSV with a header (``*.tsv``, ``*.tsv.gz``: ``iter_tsv_records``);
    gzip, a BOM and CRLF line ends are fine (``data.textfile``). Every format is read entry by
    entry (JSON documents with ijson), but the passages returned are one list: a corpus too big
    for that is streamed (``CorpusScan``) by the distributed index build.

    A given id is the passage's key: a repeated id is a bad entry (the first is kept), and a
    passage whose text repeats another's under its own id is kept (and counted). Entries
    without an id get one from title + text, so identical ones merge (counted). Raises
    DataError when the file is unreadable or holds no usable passage.
    """
    scan = CorpusScan(path)
    passages = list(scan.passages())
    return CorpusRead(passages, scan.bad, scan.merged, scan.same_text)

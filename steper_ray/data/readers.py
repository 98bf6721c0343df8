"""Readers for HotpotQA, 2WikiMultihopQA, MuSiQue and a generic JSONL, in their native formats.

A file is a JSON list or JSON Lines. Each record is parsed on its own: a bad one becomes a
``BadRecord`` with its line and reason and the read goes on, so one broken record never costs
a run and is never lost silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ijson

from steper_ray.data.paths import resolve_data_path
from steper_ray.data.records import (
    UNANSWERABLE_SUFFIX,
    BadRecord,
    Passage,
    QuestionRecord,
    ReadResult,
    missing_passage_id,
)
from steper_ray.data.textfile import check_utf8, first_char, iter_lines, open_bytes
from steper_ray.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("hotpotqa", "2wikimultihopqa", "musique", "jsonl")


class RecordError(ValueError):
    """Why one record is unusable; becomes a BadRecord."""


def iter_json_document(path: Path, source: str, top: str) -> Iterator[Any]:
    """Stream the top level of a JSON document with ijson (its C backend), never holding the
    document: ``top="items"`` yields the elements of a list, ``top="pairs"`` the (key, value)
    pairs of an object, a repeated key each time it appears. Numbers are int or float, as
    ``json.loads`` gives them.

    Raises DataError when the text is not UTF-8 (``textfile.check_utf8``'s message) or not one
    valid JSON document; the entries before the break have been yielded by then, and the
    message gives their count and the text around the break.
    """
    done = 0
    try:
        with open_bytes(path, source) as fh:
            for done, entry in enumerate(ijson.items(fh, "item", use_float=True) if top == "items"
                                         else ijson.kvitems(fh, "", use_float=True), start=1):
                yield entry
    except ijson.JSONError as exc:
        check_utf8(path, source)
        what = "a JSON list" if top == "items" else "a JSON document"
        raise DataError(f"{source} starts like {what} but is not valid JSON ({_json_error(exc)}; "
                        f"entries read before the break: {done}); fix the file, or convert it to JSON Lines so that "
                        "bad records can be skipped") from None


def _json_error(exc: Exception) -> str:
    """yajl's reason and the text around the break, on one line. Its message is the reason, then
    the text near the break, then a caret line (whose column counts bytes, so it is left out)."""
    lines = str(exc).strip().splitlines()
    reason = lines[0].strip() if lines else "unreadable"
    near = lines[1].strip() if len(lines) > 2 else ""
    if not near:
        return reason
    hint = ("; NaN and Infinity are not JSON: write null" if any(w in near for w in ("NaN", "Infinity"))
            else "; several JSON documents in one file? make them one JSON list, or one per line (JSON Lines)"
            if "trailing garbage" in reason else "")
    return f"{reason} near {near!r}{hint}"


def iter_json_records(path: Path, source: str | None = None) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line, record, error) from a JSON list (streamed, ``iter_json_document``; "line" is
    the element's number) or a JSON Lines file.

    The file is opened by ``steper_ray.data.textfile`` (gzip, BOM, line ends, encodings): a
    JSON Lines line that is not UTF-8 or not JSON is yielded with its error. Raises DataError
    for an empty file, a file in another encoding or a JSON list that does not parse.
    """
    source = source or str(path)
    if first_char(path, source) == "[":
        for i, item in enumerate(iter_json_document(path, source, "items"), start=1):
            yield i, item, None
        return
    for line in iter_lines(path, source):
        if line.text is None:
            yield line.number, None, line.error
            continue
        try:
            yield line.number, json.loads(line.text), None
        except json.JSONDecodeError as exc:
            yield line.number, None, f"invalid JSON: {exc.msg}"


def detect_format(record: dict[str, Any]) -> str | None:
    if "paragraphs" in record and "question_decomposition" in record:
        return "musique"
    if "evidences" in record or "entity_ids" in record:
        return "2wikimultihopqa"
    if "context" in record and "supporting_facts" in record:
        return "hotpotqa"
    if "answers" in record and "question" in record:
        return "jsonl"
    return None


# --- field helpers: each raises RecordError naming the field -------------------------------


def _text(rec: dict[str, Any], *keys: str) -> str:
    for key in keys:
        if key in rec:
            value = rec[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                raise RecordError(f"field '{key}' is empty or not a string")
            return value.strip()
    raise RecordError(f"missing field '{keys[0]}'")


def _list(rec: dict[str, Any], key: str, required: bool = True) -> list[Any]:
    if key not in rec or rec[key] is None:
        if required:
            raise RecordError(f"missing field '{key}'")
        return []
    value = rec[key]
    if not isinstance(value, list):
        raise RecordError(f"field '{key}' is not a list")
    return value


def _answers(primary: str, aliases: list[Any]) -> list[str]:
    out = [primary]
    for alias in aliases:
        if isinstance(alias, str) and alias.strip() and alias.strip() not in out:
            out.append(alias.strip())
    return out


# --- per-format parsers ---------------------------------------------------------------------


def _parse_context_format(rec: dict[str, Any], dataset: str) -> QuestionRecord:
    """HotpotQA and 2WikiMultihopQA share `context: [[title, [sentences]]]`."""
    qid = _text(rec, "_id", "id")
    question = _text(rec, "question")
    answer = _text(rec, "answer")
    context = _list(rec, "context")
    if not context:
        raise RecordError("field 'context' is empty")
    passages: list[Passage] = []
    for item in context:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], list)
            or not all(isinstance(s, str) for s in item[1])
        ):
            raise RecordError("field 'context' has an entry that is not [title, [sentences]]")
        text = " ".join(s.strip() for s in item[1] if s.strip())
        passages.append(Passage.make(item[0], text))
    facts = []
    for sf in _list(rec, "supporting_facts", required=False):
        if not (isinstance(sf, list) and len(sf) == 2 and isinstance(sf[0], str)):
            raise RecordError("field 'supporting_facts' has an entry that is not [title, index]")
        facts.append((sf[0], int(sf[1])))
    gold_titles = {t for t, _ in facts}
    gold_ids = [p.id for p in passages if p.title in gold_titles]
    # Fullwiki files name gold paragraphs that are not in `context`: they stay gold (under a
    # placeholder id no index holds), so recall counts them as misses instead of ignoring them.
    present = {p.title for p in passages}
    missing = [t for t in dict.fromkeys(t for t, _ in facts) if t not in present]
    gold_ids += [missing_passage_id(t) for t in missing]
    meta = {k: rec[k] for k in ("type", "level", "evidences") if k in rec}
    if missing:
        meta["missing_gold_titles"] = missing
    by_title = {item[0]: item[1] for item in context}
    # The supporting sentences in annotation order: the evidence teacher's reasoning steps.
    meta["support_sentences"] = [
        by_title[t][i].strip()
        for t, i in facts
        if t in by_title and 0 <= i < len(by_title[t]) and by_title[t][i].strip()
    ]
    return QuestionRecord(
        id=qid,
        question=question,
        answers=_answers(answer, _list(rec, "answer_aliases", required=False)),
        dataset=dataset,
        gold_ids=list(dict.fromkeys(gold_ids)),
        passages=passages,
        supporting_facts=facts,
        meta=meta,
    )


def _parse_hotpotqa(rec: dict[str, Any]) -> QuestionRecord:
    return _parse_context_format(rec, "hotpotqa")


def _parse_2wiki(rec: dict[str, Any]) -> QuestionRecord:
    return _parse_context_format(rec, "2wikimultihopqa")


def _parse_musique(rec: dict[str, Any]) -> QuestionRecord:
    """MuSiQue-Ans and MuSiQue-Full. Full has each question twice under one id, an answerable
    and an unanswerable twin (``answerable: false``, supporting paragraphs removed); the
    unanswerable twin gets UNANSWERABLE_SUFFIX on its id, so the twins are two records."""
    qid = _text(rec, "id", "_id")
    answerable = rec.get("answerable", True)
    if not isinstance(answerable, bool):
        raise RecordError("field 'answerable' is not true or false")
    if not answerable:
        qid += UNANSWERABLE_SUFFIX
    question = _text(rec, "question")
    answer = _text(rec, "answer")
    paragraphs = _list(rec, "paragraphs")
    if not paragraphs:
        raise RecordError("field 'paragraphs' is empty")
    passages: list[Passage] = []
    by_idx: dict[int, Passage] = {}
    gold_ids = []
    for para in paragraphs:
        if not isinstance(para, dict):
            raise RecordError("field 'paragraphs' has an entry that is not an object")
        passage = Passage.make(_text(para, "title"), _text(para, "paragraph_text"))
        passages.append(passage)
        if isinstance(para.get("idx"), int):
            by_idx[para["idx"]] = passage
        if para.get("is_supporting"):
            gold_ids.append(passage.id)
    decomposition = []
    for step in _list(rec, "question_decomposition", required=False):
        if not isinstance(step, dict):
            raise RecordError("field 'question_decomposition' has an entry that is not an object")
        step = dict(step)
        support = by_idx.get(step.get("paragraph_support_idx"))  # type: ignore[arg-type]
        step["paragraph_id"] = support.id if support else None
        decomposition.append(step)
    return QuestionRecord(
        id=qid,
        question=question,
        answers=_answers(answer, _list(rec, "answer_aliases", required=False)),
        dataset="musique",
        gold_ids=list(dict.fromkeys(gold_ids)),
        passages=passages,
        decomposition=decomposition,
        meta={"answerable": answerable},
    )


def _parse_jsonl(rec: dict[str, Any]) -> QuestionRecord:
    """Generic `{id, question, answers}`; optional `passages: [{title, text}]` and `gold_ids`."""
    qid = _text(rec, "id", "_id")
    question = _text(rec, "question")
    raw = rec.get("answers", rec.get("answer"))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not any(isinstance(a, str) and a.strip() for a in raw):
        raise RecordError("field 'answers' is missing, empty or not a list of strings")
    answers = [a.strip() for a in raw if isinstance(a, str) and a.strip()]
    passages = []
    for para in _list(rec, "passages", required=False):
        if not isinstance(para, dict):
            raise RecordError("field 'passages' has an entry that is not an object")
        passages.append(Passage.make(_text(para, "title"), _text(para, "text")))
    gold = [g for g in _list(rec, "gold_ids", required=False) if isinstance(g, str)]
    return QuestionRecord(
        id=qid,
        question=question,
        answers=_answers(answers[0], answers[1:]),
        dataset="jsonl",
        gold_ids=gold,
        passages=passages,
    )


PARSERS: dict[str, Callable[[dict[str, Any]], QuestionRecord]] = {
    "hotpotqa": _parse_hotpotqa,
    "2wikimultihopqa": _parse_2wiki,
    "musique": _parse_musique,
    "jsonl": _parse_jsonl,
}


def read_dataset(
    path: str | Path,
    format: str = "auto",
    limit: int | None = None,
    name: str | None = None,
) -> ReadResult:
    """Read a dataset file into question records; bad records are counted with reasons.

    ``format='auto'`` detects the format from the first records that are JSON objects; pass
    one of FORMATS to override. ``name`` overrides each record's ``dataset`` field.
    """
    if format != "auto" and format not in PARSERS:
        raise DataError(f"unknown format {format!r}; use one of auto, {', '.join(FORMATS)}")
    file = resolve_data_path(path)
    source = str(path)
    records: list[QuestionRecord] = []
    bad: list[BadRecord] = []
    seen: set[str] = set()
    fmt = None if format == "auto" else format
    pending: list[tuple[int, Any, str | None]] = []  # records read before the format is known

    def handle(line: int, rec: Any, error: str | None) -> None:
        rid = rec.get("_id", rec.get("id")) if isinstance(rec, dict) else None
        rid = str(rid) if rid is not None else None
        if error is None and not isinstance(rec, dict):
            error = f"record is a JSON {type(rec).__name__}, not an object"
        if error is None:
            try:
                qr = PARSERS[fmt](rec)  # type: ignore[index]
                if qr.id in seen:
                    raise RecordError(f"duplicate id {qr.id!r}")
                seen.add(qr.id)
                if name:
                    qr.dataset = name
                records.append(qr)
                return
            except RecordError as exc:
                error = str(exc)
            except (TypeError, ValueError, KeyError) as exc:  # odd types deep inside a record
                error = f"unexpected structure ({exc.__class__.__name__}: {exc})"
        bad.append(BadRecord(source, line, rid, error))

    for line, rec, error in iter_json_records(file, source):
        if limit is not None and len(records) >= limit:
            break
        if fmt is None:
            if isinstance(rec, dict):
                fmt = detect_format(rec)
            if fmt is None:
                pending.append((line, rec, error))
                if len(pending) >= 20:
                    break
                continue
            for item in pending:
                handle(*item)
            pending.clear()
        handle(line, rec, error)
    if fmt is None:
        raise _undetected(source, pending)
    if limit is not None:
        records = records[:limit]
    result = ReadResult(records=records, bad=bad, format=fmt, source=source)
    if bad:
        log.warning(
            "%s: skipped %d bad record(s) of %d: %s",
            source,
            len(bad),
            len(bad) + len(records),
            result.bad_reasons(),
        )
    missing = result.missing_gold()
    if missing["paragraphs"]:
        log.warning(
            "%s: %d gold paragraph(s) of %d question(s) named in supporting_facts are not in the "
            "question's context (the fullwiki setting?); they stay gold and count as misses in "
            "recall",
            source, missing["paragraphs"], missing["questions"],
        )
    return result


class UndetectedFormat(DataError):
    """A file whose format could not be detected: ``reason`` says why, the message adds what to
    do on the command line (--format)."""

    def __init__(self, reason: str, advice: str):
        super().__init__(f"{reason}; {advice}")
        self.reason, self.advice = reason, advice

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole (a Ray task's error reaches the driver)
        return (type(self), (self.reason, self.advice))


def _undetected(source: str, pending: list[tuple[int, Any, str | None]]) -> DataError:
    """Why the format of a file could not be detected, from the records read so far."""
    if not pending:
        return DataError(f"{source} holds an empty JSON list: there are no records to read")
    objects = [rec for _, rec, _ in pending if isinstance(rec, dict)]
    if not objects:
        line, rec, error = pending[0]
        why = error or f"a JSON {type(rec).__name__}"
        return UndetectedFormat(
            f"cannot detect the format of {source}: none of its first {len(pending)} record(s) "
            f"is a JSON object (line {line}: {why})",
            f"check the file, or pass --format with one of {', '.join(FORMATS)} to count each bad record and go on")
    return UndetectedFormat(f"cannot detect the format of {source} (first record keys: {sorted(objects[0])})",
                            f"pass --format with one of {', '.join(FORMATS)}")

"""Every user file goes through one opener: gzip, byte-order marks, encodings, line ends."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.commands.retrieve import read_queries
from steper_ray.data import read_corpus, read_dataset
from steper_ray.data.paths import SAMPLE_DIR
from steper_ray.data.textfile import ENCODING_WINDOW, first_char, iter_lines
from steper_ray.errors import DataError

SAMPLES = sorted(p for p in SAMPLE_DIR.rglob("*") if p.suffix in {".json", ".jsonl"})
QA = [{"id": f"q{i}", "question": f"Who wrote book {i}?", "answers": [f"Author {i}"]} for i in range(4)]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _variants(raw: bytes) -> dict[str, bytes]:
    crlf = raw.replace(b"\n", b"\r\n")
    return {"bom": b"\xef\xbb\xbf" + raw, "gzip": gzip.compress(raw), "crlf": crlf,
            "gzip+bom+crlf": gzip.compress(b"\xef\xbb\xbf" + crlf)}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.relative_to(SAMPLE_DIR).as_posix())
def test_every_sample_reads_the_same_with_bom_gzip_and_crlf(sample: Path, tmp_path: Path) -> None:
    plain = read_dataset(sample)
    assert plain.records or plain.bad
    for kind, data in _variants(sample.read_bytes()).items():
        variant = tmp_path / f"{kind}-{sample.name}"
        variant.write_bytes(data)
        got = read_dataset(variant)
        assert got.format == plain.format, kind
        assert [r.to_dict() for r in got.records] == [r.to_dict() for r in plain.records], kind
        assert [p for r in got.records for p in r.passages] == [p for r in plain.records for p in r.passages]
        assert [(b.line, b.record_id, b.reason) for b in got.bad] == \
            [(b.line, b.record_id, b.reason) for b in plain.bad], kind


def test_gzip_dataset_through_the_index_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A gzip'ed dataset used to end in a UnicodeDecodeError traceback (exit 1).
    gz = tmp_path / "mini.jsonl.gz"
    gz.write_bytes(gzip.compress((SAMPLE_DIR / "musique/dev.jsonl").read_bytes()))
    assert main(["index", "--dataset", str(gz), "--out", str(tmp_path / "ix"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["passages"] == 900 and summary["read"]["good"] == 50


def test_a_line_that_is_not_utf8_is_a_counted_bad_record(tmp_path: Path) -> None:
    raw = _jsonl(QA[:2]) + b'{"id": "q9", "question": "Caf\xe9?", "answers": ["x"]}\n' + _jsonl(QA[2:])
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(raw)
    result = read_dataset(f)
    assert [r.id for r in result.records] == ["q0", "q1", "q2", "q3"]
    assert [(b.line, b.record_id, b.reason) for b in result.bad] == [(3, None, "line is not valid UTF-8")]


def test_a_whole_file_in_another_encoding_is_refused_naming_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": f"q{i}", "question": f"Où est né l'auteur {i} ?", "answers": ["Genève"]} for i in range(5)]
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(_jsonl(rows).decode("utf-8").encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text: 5 of the 5 lines .*WINDOWS-1252.*iconv"):
        read_dataset(latin)
    assert main(["index", "--dataset", str(latin), "--out", str(tmp_path / "ix")]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and "Traceback" not in err
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes(_jsonl(QA).decode("utf-8").encode("utf-16"))  # with its BOM
    with pytest.raises(DataError, match="encoded as UTF-16 .*iconv -f UTF-16"):
        read_dataset(utf16)
    bare16 = tmp_path / "utf16le.jsonl"
    bare16.write_bytes(_jsonl(QA).decode("utf-8").encode("utf-16-le"))  # no BOM
    with pytest.raises(DataError, match="NUL bytes"):
        read_dataset(bare16)
    listed = tmp_path / "latin1.json"
    listed.write_bytes(json.dumps(rows, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8 text .*line 1"):
        read_dataset(listed)


def test_encoding_is_judged_on_a_window_then_at_the_end(tmp_path: Path) -> None:
    # Many good lines, then a stretch of bad ones: each bad line counted, not the whole file.
    good = [{"id": f"g{i}", "question": "q?", "answers": ["a"]} for i in range(ENCODING_WINDOW)]
    f = tmp_path / "late.jsonl"
    f.write_bytes(_jsonl(good) + b'{"id": "b", "question": "\xff?", "answers": ["a"]}\n' * 3)
    result = read_dataset(f)
    assert len(result.records) == ENCODING_WINDOW and len(result.bad) == 3
    # ...but if most of the file is not UTF-8, the end-of-file verdict still refuses it.
    f.write_bytes(_jsonl(good[:2]) + b'{"id": "b", "question": "\xff?", "answers": ["a"]}\n' * 5)
    with pytest.raises(DataError, match="5 of the 7 lines read are not valid UTF-8"):
        read_dataset(f)


def test_bom_is_ignored_everywhere(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(bom + _jsonl(QA))  # used to lose its first record
    assert [r.id for r in read_dataset(jsonl).records] == ["q0", "q1", "q2", "q3"]
    listed = tmp_path / "bom.json"
    listed.write_bytes(bom + json.dumps(QA).encode())  # used to be "cannot detect the format"
    assert read_dataset(listed).format == "jsonl" and len(read_dataset(listed).records) == 4
    corpus = tmp_path / "corpus.json"
    corpus.write_bytes(bom + json.dumps({"Falcon Ridge": ["A ridge.", "High."]}).encode())
    assert [(p.title, p.text) for p in read_corpus(corpus).passages] == [("Falcon Ridge", "A ridge. High.")]
    queries = tmp_path / "q.jsonl"
    queries.write_bytes(bom + b'{"question": "capital of Mountrail County"}\n')
    assert read_queries(queries) == ["capital of Mountrail County"]  # not the raw JSON line
    assert first_char(listed) == "[" and next(iter_lines(jsonl)).text.startswith("{")


def test_lines_split_at_newline_only(tmp_path: Path) -> None:
    # U+2028, U+2029, U+0085, form feed and vertical tab are line breaks to str.splitlines.
    odd = "before\u2028after\u2029x\x85y\x0cz\x0bw"
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"question": odd}, ensure_ascii=False) + "\r\n" + '{"query": "two"}\n',
                       encoding="utf-8")
    assert read_queries(queries) == [odd, "two"]
    text = tmp_path / "q.txt"
    text.write_text(f"first {odd}\r\n\r\nsecond\n", encoding="utf-8")
    assert read_queries(text) == [f"first {odd}", "second"]  # one query per input line
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": f"Q {odd}?", "answers": ["x"]}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    assert read_dataset(data).records[0].question == f"Q {odd}?"
    assert [line.number for line in iter_lines(text)] == [1, 3]


def test_empty_and_blank_files_say_they_are_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jsonl is empty"):
        read_dataset(empty)
    assert main(["index", "--dataset", str(empty), "--out", str(tmp_path / "ix")]) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "--format" not in err
    blank = tmp_path / "blank.jsonl.gz"
    blank.write_bytes(gzip.compress(b"\xef\xbb\xbf\r\n  \n\n"))
    with pytest.raises(DataError, match="has only 3 blank line"):
        read_dataset(blank)
    with pytest.raises(DataError, match="is empty"):
        read_corpus(empty)
    with pytest.raises(DataError, match="is empty"):
        read_queries(empty)
    nothing = tmp_path / "list.json"
    nothing.write_text("[]")
    with pytest.raises(DataError, match="empty JSON list"):
        read_dataset(nothing)


def test_damaged_gzip_and_other_compressions_are_refused(tmp_path: Path) -> None:
    whole = gzip.compress(_jsonl(QA * 50))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="damaged gzip file"):
        read_dataset(cut)
    bzipped = tmp_path / "data.jsonl.bz2"
    bzipped.write_bytes(bz2.compress(_jsonl(QA)))
    with pytest.raises(DataError, match="bzip2-compressed, not a text file; decompress it") as info:
        read_dataset(bzipped)
    assert "TSV" in str(info.value)  # corpus files may be TSV, so the fix names it


def test_a_queries_line_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "q.txt"
    f.write_bytes(b"one\ntwo\nthr\xe9e\nfour\nfive\n")
    with pytest.raises(DataError, match=r"q.txt:3: line is not valid UTF-8; save the file as UTF-8"):
        read_queries(f)


def test_every_bad_queries_line_is_named_at_once(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    lines = ['{"question": "one"}', '{"question": ', "plain two", '{"query": ""}', '{"question": "three"}',
             *['{"q": 1}'] * 6]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_queries(f)
    message = str(info.value)
    assert message.startswith("8 of 11 query lines are bad, nothing was searched: ")
    assert f"{f}:2: invalid JSON (Expecting value at column 13)" in message and f"{f}:4: the query is empty" in message
    assert f"{f}:8: no 'question'" in message and f"{f}:9:" not in message  # five named, the rest counted
    assert "; and 3 more. a queries file holds one query per line: plain text" in message
    f.write_text('{"question": "one"}\n{"question": " "}\n')
    with pytest.raises(DataError, match=f"1 of 2 query line is bad, nothing was searched: {f}:2: the query is empty"):
        read_queries(f)


@pytest.mark.parametrize("text", ['[{"question": "owls"}, {"question": "zebra"}]\n',
                                  '[\n  {"question": "owls"},\n  "zebra"\n]\n'])
def test_a_json_list_of_queries_is_refused_with_the_conversion(tmp_path: Path, text: str) -> None:
    f = tmp_path / "q.json"
    f.write_text(text)
    with pytest.raises(DataError, match=r"q.json is a JSON list; a queries file holds one query per line.*jq -c"
                       rf" '\.\[\]' {f} > {tmp_path}/q\.queries\.jsonl`$"):
        read_queries(f)
    f.write_text("[citation needed] owls\nzebra\n")  # plain text that starts with "[" is queries
    assert read_queries(f) == ["[citation needed] owls", "zebra"]


def test_no_warning_storm_for_a_clean_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "ok.jsonl.gz"
    f.write_bytes(gzip.compress(_jsonl(QA)))
    with caplog.at_level(logging.WARNING):
        assert len(read_dataset(f).records) == 4
    assert caplog.records == []

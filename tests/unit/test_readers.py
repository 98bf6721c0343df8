from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.data import extract_corpus, passage_id, read_corpus, read_dataset
from steper_ray.errors import DataError
from steper_ray.evaluate.metrics import recall_at_k


@pytest.mark.parametrize(
    ("path", "fmt", "good"),
    [
        ("sample:hotpotqa/dev.jsonl", "hotpotqa", 50),
        ("sample:hotpotqa/train.json", "hotpotqa", 30),
        ("sample:musique/dev.jsonl", "musique", 50),
        ("sample:musique/train.json", "musique", 30),
        ("sample:2wikimultihopqa/dev.jsonl", "2wikimultihopqa", 50),
    ],
)
def test_bundled_samples_detect_and_read(path: str, fmt: str, good: int) -> None:
    result = read_dataset(path)
    assert result.format == fmt
    assert len(result.records) == good
    assert result.bad == []
    for rec in result.records:
        assert rec.question and rec.answers and rec.passages
        assert rec.gold_ids, rec.id  # every sample question has annotated gold paragraphs
        assert set(rec.gold_ids) <= {p.id for p in rec.passages}


def test_hotpotqa_record_fields() -> None:
    rec = read_dataset("sample:hotpotqa/dev.jsonl").records[0]
    assert rec.id == "5a7f6fd75542992e7d278cfa"
    assert rec.answers == ["Rush"]
    assert rec.dataset == "hotpotqa"
    assert len(rec.passages) == 10
    assert rec.supporting_facts == [("Nobody's Hero", 0), ("Neil Peart", 1)]
    gold_titles = {p.title for p in rec.passages if p.id in rec.gold_ids}
    assert gold_titles == {"Nobody's Hero", "Neil Peart"}
    # sentences are joined with single spaces, no leading blanks kept
    assert "  " not in rec.passages[0].text and not rec.passages[0].text.startswith(" ")
    assert rec.meta["type"] in {"bridge", "comparison"}


def test_musique_record_fields() -> None:
    rec = read_dataset("sample:musique/dev.jsonl").records[0]
    assert rec.id == "2hop__574419_270105"
    assert rec.answers[0] == "Stanley"
    assert len(rec.passages) == 20
    assert len(rec.gold_ids) == 2
    assert [d["answer"] for d in rec.decomposition] == ["Mountrail County", "Stanley"]
    # each decomposition step points to its supporting paragraph's id
    assert [d["paragraph_id"] for d in rec.decomposition] and all(
        d["paragraph_id"] in rec.gold_ids for d in rec.decomposition
    )


def test_musique_aliases_become_answers() -> None:
    recs = read_dataset("sample:musique/train.json").records
    with_alias = [r for r in recs if len(r.answers) > 1]
    assert with_alias, "the sample has questions with answer aliases"
    assert all(len(set(r.answers)) == len(r.answers) for r in recs)


def test_2wiki_record_fields() -> None:
    rec = read_dataset("sample:2wikimultihopqa/dev.jsonl").records[0]
    assert rec.answers == ["Free Guy"]
    assert rec.meta["type"] == "bridge_comparison"
    assert rec.meta["evidences"][0] == ["Forbidden Ground", "director", "Pál Gábor"]


def test_malformed_records_are_counted_with_reasons_not_crashing() -> None:
    result = read_dataset("sample:2wikimultihopqa/malformed.jsonl")
    assert result.format == "2wikimultihopqa"
    assert result.records == []
    assert len(result.bad) == 36
    assert result.bad_reasons() == {"missing field 'context'": 36}
    assert result.bad[0].line == 1 and result.bad[0].record_id == "13c1565a087311ebbd66ac1f6bf848b6"
    assert result.summary()["bad"] == 36


def test_mixed_file_keeps_good_and_reports_each_bad(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[2] / "steper_ray/data/sample/2wikimultihopqa"
    lines = (good / "dev.jsonl").read_text().splitlines()[:3]
    bad = (good / "malformed.jsonl").read_text().splitlines()[:2]
    dup = lines[0]
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join([lines[0], "{not json", bad[0], "[1, 2]", lines[1], "", bad[1], dup, lines[2]]) + "\n")
    result = read_dataset(f)
    assert len(result.records) == 3
    assert result.bad_reasons() == {
        "invalid JSON: Expecting property name enclosed in double quotes": 1,
        "missing field 'context'": 2,
        "record is a JSON list, not an object": 1,
        f"duplicate id {json.loads(dup)['_id']!r}": 1,
    }
    assert [b.line for b in result.bad] == [2, 3, 4, 7, 8]


def test_explicit_format_override_and_generic_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "qa.jsonl"
    f.write_text(
        json.dumps({"id": "q1", "question": "Who?", "answers": ["A", "B"]}) + "\n"
        + json.dumps({"id": "q2", "question": "What?", "answers": []}) + "\n"
        + json.dumps({"id": "q3", "question": "Where?", "answers": "C",
                      "passages": [{"title": "T", "text": "x y"}]}) + "\n"
    )
    result = read_dataset(f)
    assert result.format == "jsonl"
    assert [r.answers for r in result.records] == [["A", "B"], ["C"]]
    assert result.records[1].passages[0].id == passage_id("T", "x y")
    assert list(result.bad_reasons()) == ["field 'answers' is missing, empty or not a list of strings"]
    # Forcing HotpotQA on it: every record is bad for a stated reason
    forced = read_dataset(f, format="hotpotqa")
    assert forced.records == [] and len(forced.bad) == 3
    assert all("missing field" in b.reason for b in forced.bad)


def test_limit_and_name() -> None:
    result = read_dataset("sample:hotpotqa/dev.jsonl", limit=7, name="hp")
    assert len(result.records) == 7 and {r.dataset for r in result.records} == {"hp"}


def test_unreadable_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no bundled sample"):
        read_dataset("sample:nope.jsonl")
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(DataError, match="pass --format"):
        read_dataset(odd)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"_id": "a",')
    with pytest.raises(DataError, match="not valid JSON"):
        read_dataset(broken)
    with pytest.raises(DataError, match="unknown format"):
        read_dataset(odd, format="squad")


def test_corpus_extraction_dedups_with_stable_ids() -> None:
    recs = read_dataset("sample:musique/dev.jsonl").records
    corpus = extract_corpus(recs)
    keys = [(p.title, p.text) for p in corpus]
    assert len(keys) == len(set(keys))
    assert len(corpus) < sum(len(r.passages) for r in recs)  # questions share paragraphs
    assert all(p.id == passage_id(p.title, p.text) for p in corpus)
    assert extract_corpus(recs) == corpus  # stable across calls
    assert {g for r in recs for g in r.gold_ids} <= {p.id for p in corpus}


def test_read_corpus_formats(tmp_path: Path) -> None:
    as_dict = tmp_path / "c1.json"
    as_dict.write_text(json.dumps({"A": ["One.", " Two."], "B": ["Three."]}))
    corpus = read_corpus(as_dict)
    assert [(p.title, p.text) for p in corpus.passages] == [("A", "One. Two."), ("B", "Three.")]
    assert corpus.bad == []
    as_list = tmp_path / "c2.json"
    as_list.write_text(json.dumps([{"title": "A", "text": "x"}, {"title": "A", "text": "x"}, {"title": "C"}]))
    corpus = read_corpus(as_list)
    assert len(corpus.passages) == 1 and [b.reason for b in corpus.bad] == ["field 'text' is missing or empty"]
    assert corpus.merged == 1  # the identical entry without an id is merged, and counted
    as_jsonl = tmp_path / "c3.jsonl"
    as_jsonl.write_text('{"id": "d1", "title": "T", "text": "t"}\nnot json\n')
    corpus = read_corpus(as_jsonl)
    assert corpus.passages[0].id == "d1" and len(corpus.bad) == 1
    empty = tmp_path / "c4.jsonl"
    empty.write_text("{}\n")
    with pytest.raises(DataError, match="no usable passages"):
        read_corpus(empty)


def test_corpus_ids_are_keys(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(x) for x in [
        {"id": "42", "title": "Falcon Ridge", "text": "Falcon Ridge is a ridge in Alberta."},
        {"id": "42", "title": "Heron Bay", "text": "Heron Bay is a bay in Ontario."},
        {"id": "43", "title": "Falcon Ridge", "text": "Falcon Ridge is a ridge in Alberta."},
        {"id": 44, "title": "Owl Lake", "text": "Owl Lake is a lake."},
        {"title": "Owl Lake", "text": "Owl Lake is a lake."},
        {"title": "Owl Lake", "text": "Owl Lake is a lake."},
    ]) + "\n")
    read = read_corpus(corpus)
    # the repeated id is a counted bad entry (the first is kept); the same text under its own
    # id is kept; identical entries without an id merge, counted
    assert [(p.id, p.title) for p in read.passages] == [
        ("42", "Falcon Ridge"), ("43", "Falcon Ridge"), ("44", "Owl Lake"),
        (passage_id("Owl Lake", "Owl Lake is a lake."), "Owl Lake")]
    assert [(b.line, b.record_id, b.reason) for b in read.bad] == [
        (2, "42", "duplicate id (the first entry with it is kept)")]
    assert read.summary() == {"passages": 4, "bad": 1,
                              "bad_reasons": {"duplicate id (the first entry with it is kept)": 1},
                              "merged_identical_without_id": 1, "same_text_under_other_ids": 2}
    # every given id is either a passage or a counted bad entry
    given = {"42", "43", "44"}
    assert given <= {p.id for p in read.passages} | {b.record_id for b in read.bad}


def _hotpot(qid: str, present: list[str], gold: list[str]) -> dict:
    return {"_id": qid, "question": f"Question {qid}?", "answer": "yes", "type": "bridge",
            "context": [[t, [f"{t} is a place.", " It is old."]] for t in present],
            "supporting_facts": [[t, 0] for t in gold]}


def test_fullwiki_gold_paragraphs_missing_from_context_stay_gold(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "fullwiki.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        _hotpot("a", ["Alpha", "Noise"], ["Alpha", "Beta", "Gamma", "Delta"]),  # 1 of 4 present
        _hotpot("b", ["Noise"], ["Beta", "Gamma"]),  # none present
        _hotpot("c", ["Alpha", "Beta"], ["Alpha", "Beta"]),  # distractor setting: all present
    ]) + "\n")
    with caplog.at_level("WARNING"):
        result = read_dataset(f)
    a, b, c = result.records
    assert len(a.gold_ids) == 4 and a.gold_ids[0] == passage_id("Alpha", "Alpha is a place. It is old.")
    assert a.gold_ids[1:] == ["missing:Beta", "missing:Gamma", "missing:Delta"]
    assert b.gold_ids == ["missing:Beta", "missing:Gamma"] and b.meta["missing_gold_titles"] == ["Beta", "Gamma"]
    assert "missing_gold_titles" not in c.meta and all(g.startswith("p") for g in c.gold_ids)
    assert result.summary()["missing_gold"] == {"questions": 2, "paragraphs": 5}
    warnings = [r for r in caplog.records if "gold paragraph" in r.getMessage()]
    assert len(warnings) == 1 and "5 gold paragraph(s) of 2 question(s)" in warnings[0].getMessage()
    # every retrieved passage of the file found: recall is 1/4, 0 and 1, not 1.0 over one question
    found = [p.id for r in result.records for p in r.passages]
    assert [recall_at_k(found, r.gold_ids, 10) for r in result.records] == [0.25, 0.0, 1.0]


def _musique(qid: str, answerable: bool) -> dict:
    rec = json.loads((Path(__file__).resolve().parents[2] / "steper_ray/data/sample/musique/dev.jsonl")
                     .read_text().splitlines()[0])
    return {**rec, "id": qid, "answerable": answerable}


def test_musique_full_twins_are_two_records(tmp_path: Path) -> None:
    f = tmp_path / "full.jsonl"
    # the unanswerable twin first, as in MuSiQue-Full files; a real repeat is still a duplicate
    f.write_text("\n".join(json.dumps(r) for r in [
        _musique("2hop__1", False), _musique("2hop__1", True), _musique("2hop__1", True),
        {**_musique("2hop__2", True), "answerable": "no"},
    ]) + "\n")
    result = read_dataset(f)
    assert [(r.id, r.answerable) for r in result.records] == [("2hop__1::unanswerable", False), ("2hop__1", True)]
    assert [(b.line, b.reason) for b in result.bad] == [
        (3, "duplicate id '2hop__1'"), (4, "field 'answerable' is not true or false")]
    assert result.summary()["unanswerable"] == 1
    assert read_dataset("sample:musique/dev.jsonl").summary()["unanswerable"] == 0

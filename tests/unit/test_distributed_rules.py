"""When an index is built on Ray Data, and the streamed corpus read it uses."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from steper_ray.config import IndexConfig, load_config
from steper_ray.data import CorpusScan, read_corpus
from steper_ray.errors import DataError, UserError
from steper_ray.retrieval.distributed import use_distributed, work_dir


def _corpus(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_auto_builds_big_corpus_files_on_ray_data_and_datasets_never(tmp_path: Path) -> None:
    small = _corpus(tmp_path / "small.jsonl", [json.dumps({"title": "t", "text": "x"})])
    auto = IndexConfig(build={"auto_min_mb": 0.000001})
    assert use_distributed(auto, str(small))
    assert not use_distributed(IndexConfig(), str(small))  # 256 MB by default
    assert use_distributed(IndexConfig(distributed=True), str(small))
    assert not use_distributed(IndexConfig(distributed=False, build={"auto_min_mb": 0.000001}), str(small))
    assert not use_distributed(IndexConfig(distributed=True), None)  # dataset paragraphs
    # 'auto' leaves the rank_bm25 reference in the process; 'true' with it is a config error
    assert not use_distributed(IndexConfig(build={"auto_min_mb": 0.000001}, bm25={"backend": "rank_bm25"}), str(small))
    with pytest.raises(UserError, match="index.distributed=true needs index.bm25.backend=bm25s") as err:
        load_config(None, ["index.distributed=true", "index.bm25.backend=rank_bm25"])
    assert "got {" not in str(err.value) and "Value error" not in str(err.value)  # the message, not the section dump
    with pytest.raises(UserError, match="part_passages"):
        load_config(None, ["index.build.part_passages=5"])
    assert work_dir(tmp_path / "ix") == tmp_path / ".ix.build"


def test_streamed_read_counts_what_the_list_read_counts(tmp_path: Path) -> None:
    path = _corpus(tmp_path / "c.jsonl", [
        json.dumps({"id": "a", "title": "A", "text": "one"}),
        json.dumps({"id": "a", "title": "A2", "text": "repeated id"}),
        json.dumps({"id": "b", "title": "A", "text": "one"}),  # same text under its own id: kept
        json.dumps({"title": "C", "text": "three"}),
        json.dumps({"title": "C", "text": "three"}),  # identical without id: merged
        json.dumps({"id": "e", "title": "E", "text": ""}),
        "{broken",
    ])
    scan = CorpusScan(path)
    streamed = scan.passages()
    first = next(streamed)  # one passage at a time
    assert first.id == "a" and scan.count == 1
    rest = list(streamed)
    listed = read_corpus(path)
    assert [first, *rest] == listed.passages and len(listed.passages) == 3
    assert scan.summary() == listed.summary()
    assert scan.summary()["bad"] == 3 and scan.merged == 1 and scan.same_text == 1


def test_a_broken_first_line_is_one_bad_line_of_json_lines(tmp_path: Path) -> None:
    path = _corpus(tmp_path / "c.jsonl", [
        '{"id": "1", "title": "cut off',
        json.dumps({"id": "2", "title": "B", "text": "kept"}),
        json.dumps({"id": "3", "title": "C", "text": 123}),
    ])
    read = read_corpus(path)
    assert [p.id for p in read.passages] == ["2"]
    reasons = read.summary()["bad_reasons"]
    assert sum(reasons.values()) == 2 and any(r.startswith("invalid JSON") for r in reasons)
    assert "field 'text' is a JSON number, not a string or a list of sentences" in reasons
    # a JSON document over several lines is still one document
    doc = tmp_path / "doc.json"
    doc.write_text('{\n  "Title A": ["One.", "Two."],\n  "Title B": ["Three."]\n}\n')
    assert [p.title for p in read_corpus(doc).passages] == ["Title A", "Title B"]


def test_a_title_given_twice_in_a_json_dict_is_counted(tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text('{\n  "Alpha": ["First."],\n  "Beta": ["Two."],\n  "Alpha": ["Again."],\n  "Gamma": 5,\n'
                   '  "Delta": ["ok", 3],\n  "Eps": {"x": 1}\n}\n')
    read = read_corpus(doc)
    assert [(p.title, p.text) for p in read.passages] == [("Alpha", "First."), ("Beta", "Two.")]
    assert [(b.line, b.record_id, b.reason) for b in read.bad] == [
        (3, "Alpha", "duplicate title (the first entry with it is kept)"),
        (4, "Gamma", "field 'text' is a JSON number, not a string or a list of sentences"),
        (5, "Delta", "field 'text' holds a JSON number among its sentences, not only strings"),
        (6, "Eps", "field 'text' is a JSON object, not a string or a list of sentences")]


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_json_documents_are_streamed_entry_by_entry(tmp_path: Path, shape: str) -> None:
    entries = [{"id": f"p{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(3)]
    whole = (json.dumps(entries, indent=1) if shape == "list"
             else json.dumps({e["title"]: [e["text"]] for e in entries}, indent=1))
    good = tmp_path / f"good.{shape}.json.gz"
    good.write_bytes(gzip.compress(whole.encode()))
    assert [p.title for p in read_corpus(good).passages] == ["T0", "T1", "T2"]
    cut = tmp_path / f"cut.{shape}.json"
    cut.write_text(whole[: whole.index("T2") - 2])  # cut off after its second entry
    scan = CorpusScan(cut).passages()
    if shape == "list":  # its first entries come out before the error: no whole-document parse
        assert [next(scan).title, next(scan).title] == ["T0", "T1"]
    # a dict is checked for record keys in a first streamed pass, which meets the break
    with pytest.raises(DataError, match=r"is not valid JSON \(parse error: premature EOF.*; entries read before the break: "
                                        + ("2" if shape == "list" else "1")  # ijson yields a pair at the next token
                                        + r"\); fix .*JSON Lines"):
        next(scan)
    nan = tmp_path / f"nan.{shape}.json"
    nan.write_text(whole.replace('"text 1"', "NaN"))
    with pytest.raises(DataError, match=r"\(lexical error: .* near '.*NaN.*'; NaN and Infinity are not "
                                        r"JSON: write null; entries read before the break: 1\)"):
        read_corpus(nan)
    latin = tmp_path / f"latin.{shape}.json"
    latin.write_bytes(whole.replace("text 2", "caf\u00e9").encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 0xe9 on line \d+ .*iconv"):
        read_corpus(latin)


def test_a_one_line_record_is_never_read_as_a_title_dict(tmp_path: Path) -> None:
    # one passage with a misspelt text field: a bad entry, not passages titled "title"/"body"
    odd = _corpus(tmp_path / "odd.jsonl", [json.dumps({"title": "Foo", "body": "bar text"})])
    with pytest.raises(DataError, match=r"no usable passages \(1 bad entries: line 1: field 'text' is missing"):
        read_corpus(odd)
    # one dataset question on one line: the --dataset hint, as for a file of several
    question = _corpus(tmp_path / "q.jsonl", [json.dumps({"id": "q1", "question": "Who?", "answer": "x",
                                                          "paragraphs": [{"title": "T", "paragraph_text": "p"}]})])
    with pytest.raises(DataError, match="a dataset file is indexed with --dataset"):
        read_corpus(question)


@pytest.mark.parametrize("indent", [None, 1])
def test_a_title_dict_with_a_passage_titled_text_keeps_every_title(tmp_path: Path, indent: int | None) -> None:
    doc = {"Alpha": ["First sentence.", "Second."], "text": ["A passage titled text."], "id": ["Titled id."]}
    path = tmp_path / "titles.json"
    path.write_text(json.dumps(doc, indent=indent))
    read = read_corpus(path)
    assert [(p.title, p.text) for p in read.passages] == [("Alpha", "First sentence. Second."),
                                                        ("text", "A passage titled text."), ("id", "Titled id.")]
    assert read.bad == []
    # one passage whose text is a list of sentences stays one record (on one line: JSON Lines)
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"text": ["Only sentence.", "And another."]}))
    assert [(p.title, p.text) for p in read_corpus(one).passages] == [("", "Only sentence. And another.")]


def test_utf8_with_one_stray_byte_says_fix_the_byte_and_tsv_takes_long_fields(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.json"
    mixed.write_bytes(json.dumps([{"title": "Z\u00fcrich", "text": "a city"}, {"title": "B", "text": "caf"}],
                                 ensure_ascii=False, indent=1).encode().replace(b'"caf"', b'"caf\xe9"'))
    with pytest.raises(DataError, match=r"UTF-8 text with an invalid byte \(0xe9 on line 8\): fix or remove") as err:
        read_corpus(mixed)
    assert "iconv" not in str(err.value)  # converting would garble the UTF-8 already there
    latin = tmp_path / "sub" / "latin.json"
    latin.parent.mkdir()
    latin.write_bytes(b'[{"title": "B", "text": "caf\xe9"}]')
    with pytest.raises(DataError, match="iconv") as err:
        read_corpus(latin)
    assert str(tmp_path / "sub" / "latin.utf8.json") in str(err.value)  # written beside the file
    tsv = tmp_path / "long.tsv"
    tsv.write_text("id\ttitle\ttext\n1\tLong\t" + "word " * 60_000 + "\n")  # 300 KB, over csv's 128 KiB
    assert len(read_corpus(tsv).passages[0].text) > 250_000


def test_querying_a_build_work_directory_points_to_its_index(tmp_path: Path) -> None:
    from steper_ray.retrieval.store import check_index_dir

    work = work_dir(tmp_path / "ix")
    work.mkdir()
    (work / "work.json").write_text("{}")
    with pytest.raises(UserError, match=f"work directory of an unfinished build of the index {tmp_path / 'ix'}"):
        check_index_dir(work)


def test_a_dataset_file_given_as_a_corpus_points_to_dataset() -> None:
    with pytest.raises(DataError, match="a dataset file is indexed with --dataset"):
        read_corpus("sample:hotpotqa/dev.jsonl")


def test_a_value_no_union_branch_takes_is_one_line() -> None:
    with pytest.raises(UserError) as err:
        load_config(None, ["index.distributed=maybe"])
    text = str(err.value)
    assert "index.distributed: got 'maybe'. Fix: set it to true or false or 'auto' (default 'auto')" in text
    assert "literal[" not in text and ".bool" not in text


def test_a_corpus_without_usable_passages_fails_at_its_end(tmp_path: Path) -> None:
    path = _corpus(tmp_path / "bad.jsonl", [json.dumps({"title": "t", "text": " "}), "{broken"])
    with pytest.raises(DataError, match="holds no usable passages"):
        list(CorpusScan(path).passages())


@pytest.mark.parametrize("index_type", ["flat", "ivf", "ivfpq", "hnsw"])
@pytest.mark.parametrize("shards", [1, 2])
def test_faiss_from_parts_is_the_in_process_index(tmp_path: Path, index_type: str, shards: int) -> None:
    """Vectors added part by part from memory-mapped files, trained on the same seeded sample,
    give the index the in-process build gives over the whole array."""
    from types import SimpleNamespace

    import numpy as np

    from steper_ray.data.records import Passage
    from steper_ray.retrieval.dense import DenseRetriever, build_faiss_index
    from steper_ray.retrieval.distributed import assemble_dense
    from steper_ray.retrieval.shards import shard_rows
    from steper_ray.retrieval.store import PassageTable

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((3000, 32), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    (tmp_path / "emb").mkdir()
    for i, start in enumerate(range(0, 3000, 700)):  # uneven parts
        np.save(tmp_path / "emb" / f"part-{i:05d}.npy", emb[start:start + 700])
    table = PassageTable.from_passages([Passage(f"p{i}", "t", f"text {i}") for i in range(3000)])
    cfg = IndexConfig(kind="dense", shards=shards, dense={"index_type": index_type, "nlist": 16, "nprobe": 4,
                                                          "pq_m": 8, "pq_nbits": 6, "train_sample": 1000})
    groups = shard_rows(table.ids(), shards) if shards > 1 else None
    built = assemble_dense(tmp_path, table, cfg, SimpleNamespace(dim=32), groups)
    queries = emb[:50] + 0.1 * rng.standard_normal((50, 32), dtype=np.float32)
    for rows, got in zip(groups or [np.arange(3000)], getattr(built, "shards", [built])):
        assert isinstance(got, DenseRetriever) and got.passages.ids() == [f"p{i}" for i in rows]
        want = build_faiss_index(np.ascontiguousarray(emb[rows]), cfg.dense)
        assert got.index.ntotal == len(rows)
        d1, i1 = got.index.search(queries, 10)
        d2, i2 = want.search(queries, 10)
        assert (i1 == i2).all() and np.allclose(d1, d2)


def test_dicts_records_and_broken_documents_are_told_apart(tmp_path: Path) -> None:
    def write(name: str, text: str) -> Path:
        (tmp_path / name).write_text(text)
        return tmp_path / name

    # most values are sentence lists: a dict, even with a string "text" among them or a null entry
    mixed = read_corpus(write("mixed.json", json.dumps({"text": "A string.", "Paris": ["P."], "Berlin": ["B."]})))
    assert sorted(p.title for p in mixed.passages) == ["Berlin", "Paris", "text"] and mixed.bad == []
    null = read_corpus(write("null.json", json.dumps({"Paris": ["P."], "text": ["T."], "Berlin": None})))
    assert [p.title for p in null.passages] == ["Paris", "text"] and [b.record_id for b in null.bad] == ["Berlin"]
    # one pretty-printed record is that record, not lines of JSON Lines
    one = read_corpus(write("one.json", json.dumps({"title": "Paris", "text": "A city."}, indent=1)))
    assert [(p.title, p.text) for p in one.passages] == [("Paris", "A city.")] and one.bad == []
    # a one-line document that does not parse, or that trails other text, is refused as a document
    with pytest.raises(DataError, match="NaN and Infinity are not JSON"):
        read_corpus(write("nan.json", '{"A": ["a."], "B": NaN, "C": ["c."]}'))
    with pytest.raises(DataError, match="trailing garbage.*several JSON documents in one file"):
        read_corpus(write("tail.json", '{"A": ["a."], "B": ["b."]}\nxyz\n'))
    with pytest.raises(DataError, match="trailing garbage.*several JSON documents in one file"):
        read_corpus(write("jq.json", json.dumps({"title": "A", "text": "a"}, indent=1) + "\n"
                          + json.dumps({"title": "B", "text": "b"}, indent=1) + "\n"))


def test_tsv_header_mistakes_are_named(tmp_path: Path) -> None:
    twice = tmp_path / "twice.tsv"
    twice.write_text("id\ttext\ttext\n1\tAlpha words.\tBeta\n")
    with pytest.raises(DataError, match="names column\\(s\\) text more than once"):
        read_corpus(twice)
    named = tmp_path / "passages.txt"
    named.write_text("id\ttitle\ttext\n1\tAaron\tAaron is a prophet.\n")
    with pytest.raises(DataError, match="looks like a TSV header: name the file \\*.tsv"):
        read_corpus(named)
    # one JSON row among the TSV rows used to give a one-passage index, exit 0, and no hint
    named.write_text("id\ttitle\ttext\n1\tAaron\tAaron is a prophet.\n2\tBeta\tBeta words.\n"
                     '{"title": "J", "text": "a JSON row"}\n')
    with pytest.raises(DataError, match="looks like a TSV file .* 3 of 4 entries are bad; name the file \\*.tsv"):
        read_corpus(named)


def test_ctrl_c_during_a_build_says_where_the_parts_are_kept_for_the_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from steper_ray import cli
    from steper_ray.retrieval import distributed

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"title": f"T{i}", "text": f"passage {i} words"}) + "\n" for i in range(30)))

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "_run_parts", stopped)  # Ctrl-C while the parts are tokenised
    out = tmp_path / "ix"
    assert cli.main(["index", "--corpus", str(corpus), "--kind", "bm25", "--out", str(out),
                     f"run_dir={tmp_path / 'run'}", "index.distributed=true", "index.build.part_passages=100"]) == 130
    work = distributed.work_dir(out)
    assert (f"steper-ray index: interrupted; the parts done are kept in {work}; rerun the same command to resume"
            in capsys.readouterr().err)
    assert sorted(p.name for p in (work / "parts").iterdir()) == ["part-00000.parquet"] and not out.exists()

"""`data.corpus`: what the generation, evaluation and serving indexes hold ('questions',
'pooled', or a corpus file shared by every stage), and the TSV corpus format."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.commands.index import dev_indexes, stage_passages, train_index
from steper_ray.commands.pipeline import stage_index, stage_retrieval_eval
from steper_ray.config import load_config
from steper_ray.data import extract_corpus, read_corpus, read_dataset
from steper_ray.errors import DataError
from steper_ray.layout import RunLayout
from steper_ray.retrieval import load_index
from steper_ray.retrieval.store import check_index_dir

DATA = ["data.train=[{name: musique, path: 'sample:musique/train.json', limit: 2}]",
        "data.dev=[{name: musique, path: 'sample:musique/dev.jsonl', limit: 3},"
        " {name: hotpotqa, path: 'sample:hotpotqa/dev.jsonl', limit: 3}]"]


def _ids(passages: list) -> set[str]:  # type: ignore[type-arg]
    return {p.id for p in passages}


def test_questions_and_pooled_hold_what_they_say(tmp_path: Path) -> None:
    questions = load_config(None, [f"run_dir={tmp_path}", *DATA])
    pooled = load_config(None, [f"run_dir={tmp_path}", *DATA, "data.corpus=pooled"])
    dev = {spec.name: spec for spec in questions.data.dev}
    train_all = read_dataset("sample:musique/train.json").records
    dev_all = read_dataset("sample:musique/dev.jsonl").records

    # questions: the dev set's own 3 questions; the training index every training question's
    own, what = stage_passages(questions, dev["musique"])
    assert _ids(own) == _ids(extract_corpus(dev_all[:3])) and what["corpus"] == "questions"
    assert _ids(stage_passages(questions)[0]) == _ids(extract_corpus(train_all))
    # pooled: every split given for the dataset, no limit, deduplicated
    both = _ids(extract_corpus([*train_all, *dev_all]))
    got, what = stage_passages(pooled, dev["musique"])
    assert _ids(got) == both and len(got) == len(both) and what["splits"] == [
        "sample:musique/train.json", "sample:musique/dev.jsonl"]
    assert _ids(stage_passages(pooled)[0]) == both  # the training datasets' names: musique only
    hotpot = _ids(stage_passages(pooled, dev["hotpotqa"])[0])  # no hotpotqa training split given
    assert hotpot == _ids(extract_corpus(read_dataset("sample:hotpotqa/dev.jsonl").records))


def _tsv(path: Path, passages: list) -> None:  # type: ignore[type-arg]
    """DPR's Wikipedia layout: id, text, title, gzipped."""
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, delimiter="\t", lineterminator="\n")
        out.writerow(["id", "text", "title"])
        out.writerows([f"w{i}", p.text, p.title] for i, p in enumerate(passages))  # the file's own ids


def test_a_corpus_file_is_one_index_for_every_stage(tmp_path: Path) -> None:
    passages = extract_corpus(read_dataset("sample:musique/dev.jsonl", limit=20).records)
    corpus = tmp_path / "wiki.tsv.gz"
    _tsv(corpus, passages)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", *DATA, f"data.corpus={corpus}"])
    summary = stage_index(cfg, tmp_path)
    shared = RunLayout(cfg).corpus_index
    assert summary["corpus"] == str(corpus)
    assert summary["datasets"]["musique"]["passages"] == len(passages)
    assert summary["datasets"]["hotpotqa"]["shared_with"] == "musique"  # built once
    built = (shared / "manifest.json").stat().st_mtime_ns
    assert dev_indexes(cfg) == {"musique": str(shared), "hotpotqa": str(shared)}
    assert train_index(cfg) == shared and (shared / "manifest.json").stat().st_mtime_ns == built
    assert check_index_dir(shared)["num_passages"] == len(passages)
    hits = load_index(shared).search([passages[5].text], 1)[0]
    assert hits[0].id == f"w{5}"  # the file's own ids are the passages' keys
    # recall still finds the gold paragraphs, which the datasets name by content (title + text)
    recall = stage_retrieval_eval(cfg, tmp_path)["metrics"]["musique"]
    assert recall["questions"] == 3 and recall["recall@10"] >= 0.3  # 0 when matched by id alone
    # the file changed: its index is rebuilt, not reused
    _tsv(corpus, passages[:10])
    assert train_index(cfg) == shared and check_index_dir(shared)["num_passages"] == 10
    assert dev_indexes(cfg)["musique"] == str(shared) and check_index_dir(shared)["num_passages"] == 10


def test_recall_counts_gold_paragraphs_under_a_corpus_files_own_ids() -> None:
    from steper_ray.evaluate.scoring import prediction_row
    from steper_ray.reasoning.loop import StepRecord, Trace
    from steper_ray.reasoning.prompts import PromptPassage

    record = read_dataset("sample:musique/dev.jsonl", limit=1).records[0]
    gold = [p for p in record.passages if p.id in set(record.gold_ids)]
    seen = [PromptPassage(f"w{i}", p.title, p.text) for i, p in enumerate(gold[:1])]
    step = StepRecord(step=1, task="init", query="q", retrieved_ids=[s.id for s in seen], prompt="",
                      student_prompt="", output="x", num_tokens=1)
    row = prediction_row(Trace(record.id, record.question, [step], seen, "a"), record)
    assert row["recall"] == pytest.approx(1 / len(record.gold_ids))
    assert row["steps"][0]["passage_ids"] == ["w0"]  # the file's ids are what the row shows


def test_a_rerun_with_another_corpus_setting_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "summary.json").write_text(json.dumps({"kind": "bm25", "corpus": "pooled"}))
    assert main(["pipeline", f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "finished stages used data.corpus=pooled, not 'questions'" in err and f"rm -r {tmp_path / 'index'}" in err
    assert not (tmp_path / "config.yaml").exists()  # refused before writing anything


def test_reserved_dev_names_and_a_directory_as_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", f"run_dir={tmp_path}", "data.dev=[{name: pooled, path: 'sample:musique/dev.jsonl'}]"]) == 2
    assert "data.dev names ['pooled'] are reserved" in capsys.readouterr().err
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", *DATA, f"data.corpus={tmp_path}"])
    with pytest.raises(DataError, match="is a directory; give a data file inside it"):
        train_index(cfg)


def test_tsv_corpus_rows_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "c.tsv"
    good.write_text('id\ttitle\ttext\n1\tA\t"Alpha, with\ta tab."\n2\tB\n3\tC\tGamma.\n', encoding="utf-8")
    read = read_corpus(good)
    assert [(p.id, p.title, p.text) for p in read.passages] == [("1", "A", "Alpha, with\ta tab."), ("3", "C", "Gamma.")]
    assert [(b.line, b.record_id, b.reason) for b in read.bad] == [(3, "2", "2 tab-separated fields, the header names 3")]
    text_first = tmp_path / "t.tsv"  # the id is not the first column: a short row names no id
    text_first.write_text("text\ttitle\tid\nAlpha.\tA\t1\nBeta.\t2\n", encoding="utf-8")
    assert [(b.line, b.record_id) for b in read_corpus(text_first).bad] == [(3, None)]
    no_ids = tmp_path / "n.tsv"  # an empty id cell is read as JSON's "id": null: a content id
    no_ids.write_text("id\ttitle\ttext\n\tA\tAlpha.\n \tB\tBeta.\n", encoding="utf-8")
    as_json = tmp_path / "n.jsonl"
    as_json.write_text('{"id": null, "title": "A", "text": "Alpha."}\n{"title": "B", "text": "Beta."}\n')
    assert read_corpus(no_ids).passages == read_corpus(as_json).passages
    assert len(read_corpus(no_ids).passages) == 2 and read_corpus(no_ids).bad == []
    header_only = tmp_path / "e.tsv"
    header_only.write_text("id\ttitle\ttext\n", encoding="utf-8")
    with pytest.raises(DataError, match="e.tsv holds no passages: its TSV header has no rows after it"):
        read_corpus(header_only)
    headless = tmp_path / "h.tsv"
    headless.write_text("1\tA\tAlpha.\n", encoding="utf-8")
    with pytest.raises(DataError, match="needs a first line naming its columns"):
        read_corpus(headless)


def test_bad_corpus_settings_exit_2_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", f"run_dir={tmp_path}", "data.corpus=''"]) == 2
    assert "data.corpus is empty; use 'questions', 'pooled' or a corpus file path" in capsys.readouterr().err
    assert main(["pipeline", f"run_dir={tmp_path}", "data.corpus=Pooled"]) == 2
    assert "data.corpus 'Pooled' is read as a file path; did you mean 'pooled'?" in capsys.readouterr().err
    missing = tmp_path / "nope.jsonl"
    cfg = load_config(None, [f"run_dir={tmp_path}", *DATA, f"data.corpus={missing}"])
    with pytest.raises(DataError, match=str(missing)):
        train_index(cfg)
    assert not (tmp_path / "index").exists()  # nothing half-built
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"title": "T", "text": " "}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no usable passages"):
        stage_passages(load_config(None, [f"run_dir={tmp_path}", f"data.corpus={empty}"]))

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
from steper_ray.commands.pipeline import stage_index
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
        out.writerows([p.id, p.text, p.title] for p in passages)


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
    assert hits[0].id == passages[5].id  # the file's own ids are the passages' keys


def test_tsv_corpus_rows_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "c.tsv"
    good.write_text('id\ttitle\ttext\n1\tA\t"Alpha, with\ta tab."\n2\tB\n3\tC\tGamma.\n', encoding="utf-8")
    read = read_corpus(good)
    assert [(p.id, p.title, p.text) for p in read.passages] == [("1", "A", "Alpha, with\ta tab."), ("3", "C", "Gamma.")]
    assert [(b.line, b.reason) for b in read.bad] == [(3, "2 tab-separated fields, the header names 3")]
    headless = tmp_path / "h.tsv"
    headless.write_text("1\tA\tAlpha.\n", encoding="utf-8")
    with pytest.raises(DataError, match="needs a header line naming its columns"):
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

"""The distributed index build on Ray Data: the same index as the in-process build, bad lines
counted, and an interrupted build resumed at the part it reached."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.config import IndexConfig
from steper_ray.data import extract_corpus, read_corpus, read_dataset
from steper_ray.retrieval import build_index, load_index
from steper_ray.retrieval import distributed as dist
from steper_ray.retrieval.agreement import topk_agree

pytestmark = pytest.mark.usefixtures("ray_session")

DEV_SETS = ("hotpotqa/dev.jsonl", "2wikimultihopqa/dev.jsonl", "musique/dev.jsonl")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The bundled dev sets' paragraphs as a JSONL corpus with ids, plus four bad lines; their questions."""
    records = [r for name in DEV_SETS for r in read_dataset(f"sample:{name}").records]
    passages = extract_corpus(records)
    lines = [json.dumps({"id": p.id, "title": p.title, "text": p.text}) for p in passages]
    lines[10:10] = [
        json.dumps({"id": passages[0].id, "title": "again", "text": "a repeated id"}),
        json.dumps({"id": "empty", "title": "t", "text": "  "}),
        "{not json",
        json.dumps(["a", "list"]),
    ]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, [r.question for r in records]


def _same_hits(got: list, expected: list) -> None:
    assert len(got) == len(expected) > 50
    assert all(topk_agree(x, y) for x, y in zip(got, expected))
    assert [h.score for hs in got for h in hs] == pytest.approx([h.score for hs in expected for h in hs], rel=1e-5)


def test_bm25_on_ray_data_equals_the_in_process_index_and_resumes(
        corpus_file: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, questions = corpus_file
    cfg = IndexConfig(distributed=True, shards=2, build={"part_passages": 200, "tokenizers": 2})
    expected = build_index(read_corpus(path).passages, IndexConfig(shards=2)).search(questions, 10)
    out = tmp_path / "ix"

    # interrupted once the parts are tokenised, as a killed driver would be
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dist, "_assemble_bm25", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dist.build_distributed(str(path), cfg, out)
    work = dist.work_dir(out)
    tokens = sorted((work / "tokens").glob("part-*.parquet"))
    parts = sorted((work / "parts").glob("part-*.parquet"))
    assert len(tokens) == len(parts) >= 5
    for lost in tokens[-2:]:  # two parts had not finished
        lost.unlink()
    monkeypatch.undo()

    retriever, summary = dist.build_distributed(str(path), cfg, out)
    assert summary["parts"] == len(parts) and summary["parts_resumed"] == len(parts) - 2
    assert summary["read"]["passages"] == len(retriever)
    assert summary["read"]["bad"] == 4
    assert summary["read"]["bad_reasons"]["duplicate id (the first entry with it is kept)"] == 1
    _same_hits(retriever.search(questions, 10), expected)

    retriever.save(out)
    dist.remove_work(out)
    assert not work.exists()
    _same_hits(load_index(out).search(questions, 10), expected)


def test_a_changed_corpus_starts_the_work_over(corpus_file: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, _ = corpus_file
    copy = tmp_path / "corpus.jsonl"
    copy.write_bytes(path.read_bytes())
    cfg = IndexConfig(distributed=True, build={"part_passages": 500})
    out = tmp_path / "ix"
    _, first = dist.build_distributed(str(copy), cfg, out)
    assert first["parts_resumed"] == 0
    _, again = dist.build_distributed(str(copy), cfg, out)  # nothing changed: every part reused
    assert again["parts_resumed"] == again["parts"] == first["parts"]
    with copy.open("a") as f:
        f.write(json.dumps({"id": "new", "title": "New", "text": "A passage added later."}) + "\n")
    os.utime(copy, ns=(0, 10**18))
    retriever, changed = dist.build_distributed(str(copy), cfg, out)
    assert changed["parts_resumed"] == 0 and changed["read"]["passages"] == first["read"]["passages"] + 1
    assert first["started_over"] is None and again["started_over"] is None
    assert "started over" in changed["started_over"] and "mtime_ns, size changed" in changed["started_over"]
    assert [h.id for h in retriever.search(["A passage added later"], 1)[0]] == ["new"]


def test_a_failed_read_leaves_no_work_behind_and_unfitting_encoders_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steper_ray import ray_session
    from steper_ray.errors import DataError, UserError

    empty = tmp_path / "nothing.jsonl"
    empty.write_text(json.dumps({"title": "t", "text": " "}) + "\n")
    out = tmp_path / "ix"
    with pytest.raises(DataError, match="no usable passages"):
        dist.build_distributed(str(empty), IndexConfig(distributed=True), out)
    assert not dist.work_dir(out).exists()

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "a", "title": "A", "text": "one passage"}) + "\n")
    monkeypatch.setattr(ray_session, "_started", True)  # a Ray of our own: no autoscaler adds a GPU node
    for build, setting in [({"encoder_num_gpus": 1}, "1 CPU and 1 GPU"), ({"encoder_num_cpus": 64}, "64 CPU and 0 GPU")]:
        cfg = IndexConfig(kind="dense", distributed=True, build=build)
        with pytest.raises(UserError, match=f"needs {setting}.*more than any node has.*lower index.build.*"
                                            r"\(the 1 passages read are kept in .*\.ix\.build; the rerun"):
            dist.build_distributed(str(good), cfg, out)
        assert (dist.work_dir(out) / "parts").is_dir()  # what the message promises
    with pytest.raises(UserError, match=r"index.shards=2 leaves shard.*\(the 1 passages read are kept in"):
        dist.build_distributed(str(good), IndexConfig(distributed=True, shards=2), out)


def test_a_work_directory_holding_other_data_is_refused(corpus_file: tuple[Path, list[str]], tmp_path: Path) -> None:
    from steper_ray.errors import UserError

    path, _ = corpus_file
    out = tmp_path / "ix"
    work = dist.work_dir(out)
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        dist.build_distributed(str(path), IndexConfig(distributed=True), out)
    assert (work / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_dense_on_an_encoder_actor_pool_equals_the_in_process_index(
        corpus_file: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, questions = corpus_file
    small = tmp_path / "small.jsonl"
    small.write_text("".join(path.read_text().splitlines(keepends=True)[:160]))
    questions = questions[:60]
    expected = build_index(read_corpus(small).passages, IndexConfig(kind="dense", shards=2))
    cfg = IndexConfig(kind="dense", distributed=True, shards=2, build={"part_passages": 100, "encoders": 2})
    retriever, summary = dist.build_distributed(str(small), cfg, tmp_path / "ix")
    assert summary["parts"] == 2 and summary["encode_passages_per_s"] > 0
    got, want = retriever.search(questions, 10), expected.search(questions, 10)
    assert all(topk_agree(x, y) for x, y in zip(got, want))
    assert [h.score for hs in got for h in hs] == pytest.approx([h.score for hs in want for h in hs], abs=1e-4)


def test_index_command_on_ray_data_reports_the_bad_lines(corpus_file: tuple[Path, list[str]], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, questions = corpus_file
    out = tmp_path / "ix"
    assert main(["index", "--corpus", str(path), "--out", str(out), "index.distributed=true",
                 "index.build.part_passages=400", f"run_dir={tmp_path / 'run'}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["distributed"] is True and summary["bad_records"] == 4 and len(summary["bad_examples"]) == 4
    assert summary["started_over"] is None and summary["parts_resumed"] == 0
    assert summary["passages"] == len(read_corpus(path).passages) and summary["parts"] >= 3
    assert json.loads((out / "summary.json").read_text())["passages"] == summary["passages"]
    assert not dist.work_dir(out).exists()
    assert len(load_index(out).search(questions[:3], 4)[0]) == 4

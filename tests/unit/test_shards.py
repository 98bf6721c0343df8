"""Sharded indexes: split by passage id, searched shard by shard, merged into the unsharded top-k."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from steper_ray.config import IndexConfig, load_config
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError, UserError
from steper_ray.retrieval import build_index, load_index
from steper_ray.retrieval.agreement import topk_agree
from steper_ray.retrieval.protocol import Hit
from steper_ray.retrieval.shards import ShardedRetriever, merge_topk, shard_of
from steper_ray.retrieval.store import check_index_dir

DEV_SETS = ("hotpotqa/dev.jsonl", "2wikimultihopqa/dev.jsonl", "musique/dev.jsonl")


@pytest.fixture(scope="module")
def bundled_dev() -> tuple[list[Passage], list[str]]:
    """Every bundled dev set's paragraphs pooled, and all their questions."""
    records = [r for name in DEV_SETS for r in read_dataset(f"sample:{name}").records]
    return extract_corpus(records), [r.question for r in records]


def _hit(pid: str, score: float) -> Hit:
    return Hit(pid, pid, "", score)


def test_merge_keeps_the_best_k_and_breaks_ties_by_shard_then_rank() -> None:
    a = [_hit("a1", 9.0), _hit("a2", 5.0), _hit("a3", 1.0)]
    b = [_hit("b1", 7.0), _hit("b2", 5.0)]
    assert [h.id for h in merge_topk([a, b], 4)] == ["a1", "b1", "a2", "b2"]
    assert [h.id for h in merge_topk([b, a], 3)] == ["a1", "b1", "b2"]
    assert [h.id for h in merge_topk([a, [], b], 10)] == ["a1", "b1", "a2", "b2", "a3"]
    assert merge_topk([], 3) == []


def test_shard_of_is_stable_and_in_range() -> None:
    # pinned: a saved index's passages stay in their shards across processes and versions
    # (Python's own hash() of a str is salted per process)
    assert [shard_of(i, 4) for i in ("p1", "5a8b57f25542995d1e6f1371", "Alû")] == [3, 3, 1]
    assert {shard_of(str(i), 4) for i in range(200)} == {0, 1, 2, 3}


@pytest.mark.parametrize("shards", [2, 3])
def test_bm25_shards_give_the_unsharded_top10_on_the_bundled_dev_questions(
        bundled_dev: tuple[list[Passage], list[str]], shards: int, tmp_path: Path) -> None:
    passages, questions = bundled_dev
    whole = build_index(passages, IndexConfig())
    sharded = build_index(passages, IndexConfig(shards=shards))
    assert isinstance(sharded, ShardedRetriever) and len(sharded.shards) == shards
    # disjoint, complete, and each passage where its id says
    ids = [[pid for pid in s.passages.ids()] for s in sharded.shards]
    assert sorted(pid for shard in ids for pid in shard) == sorted(p.id for p in passages)
    assert all(shard_of(pid, shards) == i for i, shard in enumerate(ids) for pid in shard)

    expected = whole.search(questions, 10)
    got = sharded.search(questions, 10)
    assert len(got) == len(questions) > 100
    assert all(topk_agree(x, y) for x, y in zip(got, expected))
    # global document frequencies: the same scores, not only the same order
    assert [h.score for hs in got for h in hs] == pytest.approx([h.score for hs in expected for h in hs], rel=1e-5)

    # saved as shard directories under one manifest; loaded back it answers the same
    sharded.save(tmp_path / "ix")
    manifest = check_index_dir(tmp_path / "ix")
    assert manifest["kind"] == "sharded" and manifest["num_passages"] == len(passages)
    assert manifest["shard_passages"] == [len(s) for s in ids]
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["manifest.json"] + [f"shard-{i}" for i in range(shards)]
    assert [check_index_dir(tmp_path / "ix" / f"shard-{i}")["num_passages"] for i in range(shards)] == [len(s) for s in ids]
    loaded = load_index(tmp_path / "ix")
    assert len(loaded) == len(passages)
    assert [[h.id for h in hs] for hs in loaded.search(questions[:20], 10)] == [[h.id for h in hs] for hs in got[:20]]


def test_a_damaged_or_missing_shard_is_an_index_load_error(bundled_dev: tuple[list[Passage], list[str]],
                                                           tmp_path: Path) -> None:
    passages, _ = bundled_dev
    root = build_index(passages[:300], IndexConfig(shards=2)).save(tmp_path / "ix")
    (root / "shard-1" / "passages.parquet").write_bytes(b"not parquet")
    with pytest.raises(IndexLoadError, match="rebuild it"):
        load_index(root)
    shutil.rmtree(root / "shard-1")
    with pytest.raises(IndexLoadError, match="shard-1"):
        check_index_dir(root)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "shard_passages": [1, 2]}))
    with pytest.raises(IndexLoadError, match="corrupt"):
        check_index_dir(root)


def test_one_shard_alone_is_refused_with_the_whole_index_named(bundled_dev: tuple[list[Passage], list[str]],
                                                              tmp_path: Path) -> None:
    passages, _ = bundled_dev
    root = build_index(passages[:300], IndexConfig(shards=2)).save(tmp_path / "ix")
    with pytest.raises(IndexLoadError, match=f"shard-0, one of the 2 shards of the index {root}.*point at {root}"):
        load_index(root / "shard-0")  # alone it would search part of the passages, silently
    assert len(load_index(root / "shard-0", shard=True)) < len(load_index(root)) == 300
    plain = build_index(passages[:30], IndexConfig()).save(tmp_path / "shard-0")  # a name, not a shard
    assert len(load_index(plain)) == 30


def test_shard_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(UserError, match="index.shards=2 needs index.bm25.backend=bm25s"):
        load_config(None, ["index.shards=2", "index.bm25.backend=rank_bm25"])
    with pytest.raises(UserError, match="index.shards"):
        load_config(None, ["index.shards=0"])
    two = [Passage("p1", "A", "alpha"), Passage("p2", "B", "beta")]
    with pytest.raises(UserError, match="without passages"):
        build_index(two, IndexConfig(shards=8))


def test_rebuilding_a_sharded_index_as_an_unsharded_one_replaces_it(bundled_dev: tuple[list[Passage], list[str]],
                                                                   tmp_path: Path) -> None:
    passages, questions = bundled_dev
    root = build_index(passages[:300], IndexConfig(shards=2)).save(tmp_path / "ix")
    build_index(passages[:300], IndexConfig()).save(root)  # the shard directories are the index's own
    assert check_index_dir(root)["kind"] == "bm25" and not (root / "shard-0").exists()
    assert len(load_index(root).search(questions[:1], 3)[0]) == 3


class _FakeResponse:
    """What a DeploymentHandle call returns, enough for RetrieverHandle: awaitable, cancellable."""

    def __init__(self, result: list[Hit] | BaseException | None):
        self.result, self.cancelled = result, False

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._answer().__await__()

    async def _answer(self) -> list[Hit]:
        if self.result is None:  # never answers
            await asyncio.sleep(3600)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def cancel(self) -> None:
        self.cancelled = True


class _FakeShard:
    def __init__(self, name: str, hits: dict[str, list[Hit]] | BaseException | None):
        self.deployment_name, self.hits, self.calls = name, hits, []
        outer = self

        class _Search:
            @staticmethod
            def remote(item: tuple[str, int]) -> _FakeResponse:
                query, k = item
                outer.calls.append(item)
                result = outer.hits if not isinstance(outer.hits, dict) else outer.hits[query][:k]
                return _FakeResponse(result)

        self.search = _Search()


def test_served_retriever_merges_every_shard_and_names_the_one_that_fails() -> None:
    from steper_ray.serve.deployments import RetrieverHandle
    from steper_ray.serve.service import ServiceUnavailable

    a = _FakeShard("retriever-shard-0", {"q1": [_hit("a1", 3.0), _hit("a2", 1.0)], "q2": [_hit("a3", 2.0)]})
    b = _FakeShard("retriever-shard-1", {"q1": [_hit("b1", 2.0)], "q2": [_hit("b2", 5.0), _hit("b3", 0.5)]})
    hits = asyncio.run(RetrieverHandle([a, b], timeout_s=5).search(["q1", "q2"], 2))
    assert [[h.id for h in hs] for hs in hits] == [["a1", "b1"], ["b2", "a3"]]
    assert a.calls == b.calls == [("q1", 2), ("q2", 2)]

    down = _FakeShard("retriever-shard-1", RuntimeError("replica died"))
    with pytest.raises(ServiceUnavailable, match="retriever deployment 'retriever-shard-1' failed"):
        asyncio.run(RetrieverHandle([a, down], timeout_s=5).search(["q1"], 2))
    silent = _FakeShard("retriever-shard-1", None)
    with pytest.raises(ServiceUnavailable, match="'retriever-shard-1' did not answer within 0.2 s"):
        asyncio.run(RetrieverHandle([a, silent], timeout_s=0.2).search(["q1"], 2))

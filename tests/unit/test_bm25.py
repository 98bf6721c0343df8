from __future__ import annotations

from pathlib import Path

import pytest

from steper_ray.config import BM25Config
from steper_ray.data.records import Passage, QuestionRecord
from steper_ray.retrieval import Retriever, load_index
from steper_ray.retrieval.agreement import topk_agree
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.retrieval.protocol import Hit
from steper_ray.retrieval.tokenize import BM25Tokenizer


@pytest.fixture(scope="module")
def both(musique_corpus: list[Passage]) -> dict[str, BM25Retriever]:
    return {b: BM25Retriever.build(musique_corpus, BM25Config(backend=b)) for b in ("bm25s", "rank_bm25")}


def test_tokenizer_stems_and_drops_stopwords() -> None:
    tok = BM25Tokenizer()
    assert tok.tokenize("The Drummers were inducted in the Hall!") == ["drummer", "were", "induct", "hall"]
    assert BM25Tokenizer("none", "none").tokenize("The cats") == ["the", "cats"]


def test_backends_agree_on_musique_dev_top10(both: dict[str, BM25Retriever], musique_dev: list[QuestionRecord]) -> None:
    queries = [r.question for r in musique_dev]
    a = both["bm25s"].search(queries, 10)
    b = both["rank_bm25"].search(queries, 10)
    assert len(a) == len(b) == len(queries) == 50
    agree = sum(topk_agree(x, y) for x, y in zip(a, b)) / len(queries)
    assert agree >= 0.99
    # Same formula: scores match to float32 precision, not just the order.
    for x, y in zip(a, b):
        assert [h.score for h in x] == pytest.approx([h.score for h in y], rel=1e-4)


def test_hits_have_ids_titles_scores_best_first(both: dict[str, BM25Retriever], musique_dev: list[QuestionRecord]) -> None:
    retriever = both["bm25s"]
    assert isinstance(retriever, Retriever)
    hits = retriever.search([musique_dev[0].question, "Mountrail County courthouse"], 5)
    assert [len(h) for h in hits] == [5, 5]
    scores = [h.score for h in hits[1]]
    assert scores == sorted(scores, reverse=True)
    assert hits[1][0].title == "Mountrail County Courthouse"
    assert all(h.id.startswith("p") for h in hits[0])


def test_edge_queries(both: dict[str, BM25Retriever]) -> None:
    for retriever in both.values():
        assert retriever.search([], 3) == []
        # no known token (or only stopwords): still k rows, all scoring 0
        out = retriever.search(["zzzqqq the"], 3)
        assert len(out[0]) == 3 and all(h.score == 0 for h in out[0])


def test_k_larger_than_corpus() -> None:
    passages = [Passage.make("A", "alpha beta"), Passage.make("B", "beta gamma")]
    for backend in ("bm25s", "rank_bm25"):
        r = BM25Retriever.build(passages, BM25Config(backend=backend))
        assert [h.title for h in r.search(["gamma"], 10)[0]][0] == "B"
        assert len(r.search(["gamma"], 10)[0]) == 2


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_save_and_load_round_trip(both: dict[str, BM25Retriever], backend: str, tmp_path: Path) -> None:
    out = both[backend].save(tmp_path / backend)
    assert (out / "manifest.json").is_file() and (out / "passages.parquet").is_file()
    loaded = load_index(out)
    assert isinstance(loaded, BM25Retriever) and loaded.cfg.backend == backend
    assert len(loaded) == len(both[backend])
    q = ["Who was the first president of the American Psychological Association?"]
    assert loaded.search(q, 10) == both[backend].search(q, 10)
    # a rebuild into the same directory replaces it atomically: no temp dirs left
    both[backend].save(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [backend]


def test_topk_agree_ties() -> None:
    h = lambda i, s: Hit(i, "", "", s)  # noqa: E731
    assert topk_agree([h("a", 3), h("b", 2)], [h("a", 3), h("b", 2)])
    assert topk_agree([h("a", 3), h("b", 2)], [h("b", 3), h("a", 3.0)]) is False
    assert topk_agree([h("a", 3), h("b", 3)], [h("b", 3), h("a", 3)])  # swap inside a tie
    assert topk_agree([h("a", 3), h("b", 1)], [h("a", 3), h("c", 1)])  # cut-off tie
    assert not topk_agree([h("a", 3), h("b", 2)], [h("a", 3), h("c", 2), h("d", 1)])
    assert not topk_agree([h("a", 3), h("b", 2)], [h("a", 3), h("c", 1.5)])

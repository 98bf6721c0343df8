from __future__ import annotations

from pathlib import Path

import pytest

from steper_ray.config import BM25Config
from steper_ray.data.records import Passage, QuestionRecord
from steper_ray.retrieval import Retriever, load_index
from steper_ray.retrieval.agreement import topk_agree
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.retrieval.protocol import Hit
from steper_ray.retrieval.tokenize import BM25Tokenizer, long_run_share


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
        # no known token (or only stopwords): no passage matches, so no hits, not k arbitrary ones
        assert retriever.search(["zzzqqq the", "gamma"], 3)[0] == []


def test_only_matching_passages_are_hits() -> None:
    passages = [Passage.make("A", "alpha beta"), Passage.make("B", "beta gamma"), Passage.make("C", "delta")]
    for backend in ("bm25s", "rank_bm25"):
        retriever = BM25Retriever.build(passages, BM25Config(backend=backend))
        hits = retriever.search(["gamma", "beta", "the"], 3)
        assert [[h.title for h in q] for q in hits] == [["B"], ["A", "B"], []]
        assert all(h.score > 0 for q in hits for h in q)


def test_k_larger_than_corpus() -> None:
    passages = [Passage.make("A", "alpha beta"), Passage.make("B", "beta gamma")]
    for backend in ("bm25s", "rank_bm25"):
        r = BM25Retriever.build(passages, BM25Config(backend=backend))
        assert [h.title for h in r.search(["gamma"], 10)[0]][0] == "B"
        assert len(r.search(["gamma"], 10)[0]) == 1  # A has no "gamma": not a hit
        assert sorted(h.title for h in r.search(["beta"], 10)[0]) == ["A", "B"]  # k capped at the corpus


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


ZH = [
    ("北京", "北京是中华人民共和国的首都，也是全国的政治和文化中心，有三千多年的建城史。"),
    ("长城", "长城是中国古代的军事防御工程，是一道高大坚固而且连绵不断的长垣。"),
    ("李白", "李白字太白号青莲居士，唐朝浪漫主义诗人，被后人誉为诗仙。"),
    ("红楼梦", "红楼梦是中国古典四大名著之一，作者是曹雪芹，成书于清代。"),
    ("东京", "东京是日本的首都，位于本州岛关东平原南端，是世界最大的都市圈之一。"),
]


def test_char_ngrams_and_the_tokenizer_option() -> None:
    tok = BM25Tokenizer(kind="char_ngram")
    assert tok.tokenize("北京大学 The Drummers 2024年") == ["drummer", "2024", "北京", "京大", "大学", "年"]
    assert BM25Tokenizer(kind="char_ngram", ngram_size=3).tokenize("北京大学") == ["北京大", "京大学"]
    # text in spaced scripts tokenises exactly as with 'word'
    assert tok.tokenize("The Drummers were inducted in the Hall!") == BM25Tokenizer().tokenize(
        "The Drummers were inducted in the Hall!")
    assert long_run_share(BM25Tokenizer()([text for _, text in ZH])) == 1.0
    assert long_run_share(tok([text for _, text in ZH])) == 0.0


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_unspaced_script_warns_at_index_time_and_char_ngrams_retrieve(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    passages = [Passage.make(title, text) for title, text in ZH]
    query = ["唐朝的诗仙是谁"]  # "who is the Tang dynasty's immortal poet": 李白
    with caplog.at_level("WARNING"):
        words = BM25Retriever.build(passages, BM25Config(backend=backend))
    assert len(words.warnings) == 1 and "index.bm25.tokenizer=char_ngram" in words.warnings[0]
    assert "dense" in words.warnings[0] and any("very long tokens" in r.getMessage() for r in caplog.records)
    # word tokens: every run is a whole phrase, nothing matches, so no hits
    assert words.search(query, 5)[0] == []
    grams = BM25Retriever.build(passages, BM25Config(backend=backend, tokenizer="char_ngram"))
    assert grams.warnings == []
    top = grams.search(query, 5)[0]
    assert top[0].title == "李白" and all(h.score < top[0].score for h in top[1:])


def test_english_corpus_does_not_warn(musique_corpus: list[Passage]) -> None:
    assert BM25Retriever.build(musique_corpus[:300], BM25Config()).warnings == []


def test_char_ngram_setting_survives_save_and_load(tmp_path: Path) -> None:
    passages = [Passage.make(title, text) for title, text in ZH]
    BM25Retriever.build(passages, BM25Config(tokenizer="char_ngram", ngram_size=2)).save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    assert isinstance(loaded, BM25Retriever) and loaded.cfg.tokenizer == "char_ngram"
    assert loaded.search(["红楼梦的作者"], 1)[0][0].title == "红楼梦"


def test_compiled_scorer_is_cached_on_disk_for_the_next_process(tmp_path: Path) -> None:
    # A fresh process loads the numba scorer another process compiled, instead of ~10 s of
    # compiling (the timing itself is measured outside the tests).
    import os
    import subprocess
    import sys

    BM25Retriever.build([Passage.make("A", "alpha beta"), Passage.make("B", "beta gamma")],
                        BM25Config()).save(tmp_path / "ix")
    script = (
        "import sys; from steper_ray.retrieval import load_index\n"
        "r = load_index(sys.argv[1]); hits = r.search(['gamma'], 1)\n"
        "import bm25s.numba.retrieve_utils as u; s = u._retrieve_internal_jitted_serial.stats\n"
        "print(hits[0][0].title, sum(s.cache_hits.values()), sum(s.cache_misses.values()))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "ix")], env=env, check=True,
                           capture_output=True, text=True).stdout.split() for _ in range(2)]
    assert runs == [["B", "0", "1"], ["B", "1", "0"]]  # compiled once, then loaded from disk
    assert any((tmp_path / "numba").rglob("*.nbi"))


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_a_corpus_without_an_indexable_word_is_a_user_error(backend: str) -> None:
    from steper_ray.errors import UserError

    passages = [Passage.make("", "the"), Passage.make("", "!!!")]
    with pytest.raises(UserError, match="no passage has a word BM25 can index"):
        BM25Retriever.build(passages, BM25Config(backend=backend))
    if backend == "bm25s":  # the distributed build's token ids: its vocabulary always holds ""
        from steper_ray.retrieval.bm25 import _BM25sBackend

        with pytest.raises(UserError, match="no passage has a word BM25 can index"):
            _BM25sBackend.build(([[], []], {"": 0}), BM25Config())

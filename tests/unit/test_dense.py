"""Dense retrieval on the real offline all-MiniLM-L6-v2 encoder and real FAISS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steper_ray.config import DenseConfig
from steper_ray.data.records import Passage, QuestionRecord
from steper_ray.errors import IndexLoadError, UserError
from steper_ray.evaluate.metrics import mean, recall_at_k
from steper_ray.retrieval import load_index
from steper_ray.retrieval.dense import DenseRetriever, SentenceTransformerEncoder, build_faiss_index

pytest.importorskip("faiss", reason="dense retrieval needs the 'cpu' or 'gpu' extra")


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def flat(encoder: SentenceTransformerEncoder, musique_corpus: list[Passage]) -> DenseRetriever:
    return DenseRetriever.build(musique_corpus, DenseConfig(device="cpu"), encoder=encoder, progress=False)


def test_encoder_is_normalised_384_dim(encoder: SentenceTransformerEncoder) -> None:
    emb = encoder.encode(["a drummer", "a percussionist", "tax law"], batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_flat_index_finds_gold_paragraphs(flat: DenseRetriever, musique_dev: list[QuestionRecord]) -> None:
    hits = flat.search([r.question for r in musique_dev], 10)
    recall = mean(recall_at_k([h.id for h in hs], r.gold_ids, 10) for r, hs in zip(musique_dev, hits))
    assert recall is not None and recall > 0.5  # 900 passages, 20 per question; random would be ~0.01
    assert all(len(h) == 10 for h in hits)
    assert all(h[0].score >= h[-1].score for h in hits)


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_indexes_match_exact_top1_mostly(
    index_type: str, encoder: SentenceTransformerEncoder, flat: DenseRetriever, musique_dev: list[QuestionRecord],
) -> None:
    cfg = DenseConfig(device="cpu", index_type=index_type, nlist=8, nprobe=8)
    # the flat index's own vectors: the same embeddings without encoding the corpus again
    vectors = flat.index.reconstruct_n(0, flat.index.ntotal)
    approx = DenseRetriever(flat.passages, encoder, build_faiss_index(vectors, cfg), cfg)
    queries = [r.question for r in musique_dev]
    same = sum(a[0].id == b[0].id for a, b in zip(approx.search(queries, 1), flat.search(queries, 1)))
    assert same >= 0.9 * len(queries)


def test_ivfpq_keeps_most_of_the_exact_top10(encoder: SentenceTransformerEncoder, flat: DenseRetriever,
                                             musique_dev: list[QuestionRecord], tmp_path: Path) -> None:
    # every list visited: what is lost is product quantisation's own error (48 codes of 8 bits
    # per 384-dim vector: 48 bytes instead of 1,536), and re-ranking the shortlist with 8-bit
    # scalar-quantised vectors wins most of it back
    vectors = flat.index.reconstruct_n(0, flat.index.ntotal)
    queries = [r.question for r in musique_dev]
    exact = [{h.id for h in hs} for hs in flat.search(queries, 10)]
    recall, built = {}, {}
    for refine in ("none", "sq8"):
        cfg = DenseConfig(device="cpu", index_type="ivfpq", nlist=8, nprobe=8, pq_m=48, pq_nbits=8, pq_refine=refine)
        built[refine] = DenseRetriever(flat.passages, encoder, build_faiss_index(vectors, cfg), cfg)
        approx = [{h.id for h in hs} for hs in built[refine].search(queries, 10)]
        recall[refine] = sum(len(a & e) for a, e in zip(approx, exact)) / sum(len(e) for e in exact)
    assert recall["none"] >= 0.8 and recall["sq8"] >= 0.95 and recall["sq8"] > recall["none"], recall
    for refine, pq in built.items():  # survives save/load with its nprobe and shortlist size
        loaded = load_index(pq.save(tmp_path / refine), encoder=encoder)
        assert [[h.id for h in hs] for hs in loaded.search(queries[:5], 10)] == \
            [[h.id for h in hs] for hs in pq.search(queries[:5], 10)]


def test_ivfpq_settings_that_cannot_train_are_refused_before_encoding() -> None:
    class Never:
        dim = 384

        def encode(self, texts, batch_size=64, progress=False):  # pragma: no cover - must not be reached
            raise AssertionError("encoded before the settings were checked")

    few = [Passage(id=str(i), title=f"t{i}", text=f"text {i}") for i in range(100)]
    with pytest.raises(UserError, match=r"pq_m=50 does not divide the encoder's dimension 384; set it to a divisor "
                                        r"of 384 \(e.g. 48\)"):
        DenseRetriever.build(few, DenseConfig(index_type="ivfpq", pq_m=50), encoder=Never(), progress=False)
    with pytest.raises(UserError, match="trains 256 centroids per sub-vector but the corpus has 100 passages"):
        DenseRetriever.build(few, DenseConfig(index_type="ivfpq"), encoder=Never(), progress=False)
    many = [Passage(id=str(i), title=f"t{i}", text=f"text {i}") for i in range(5000)]
    with pytest.raises(UserError, match="trains 4096 centroids per sub-vector but index.dense.train_sample=1000; "
                                        "raise train_sample to at least 4096 or lower pq_nbits"):
        DenseRetriever.build(many, DenseConfig(index_type="ivfpq", pq_nbits=12, train_sample=1000),
                             encoder=Never(), progress=False)


def test_training_sample_is_seeded_and_bounded() -> None:
    from steper_ray.retrieval.dense import _training_sample

    emb = np.arange(5000 * 4, dtype=np.float32).reshape(5000, 4)
    a, b = _training_sample(emb, 1000), _training_sample(emb, 1000)
    assert a.shape == (1000, 4) and np.array_equal(a, b) and len({tuple(r) for r in a}) == 1000
    assert _training_sample(emb, 6000) is emb


def test_save_load_round_trip(flat: DenseRetriever, encoder: SentenceTransformerEncoder, tmp_path: Path) -> None:
    out = flat.save(tmp_path / "dense")
    loaded = load_index(out, encoder=encoder)
    assert isinstance(loaded, DenseRetriever) and len(loaded) == len(flat)
    q = ["capital of Mountrail County"]
    assert [h.id for h in loaded.search(q, 5)[0]] == [h.id for h in flat.search(q, 5)[0]]


def test_dimension_mismatch_and_corrupt_vectors(flat: DenseRetriever, tmp_path: Path) -> None:
    out = flat.save(tmp_path / "dense")

    class Wrong:
        dim = 8

        def encode(self, texts, batch_size=64, progress=False):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(IndexLoadError, match="384-dim vectors but encoder"):
        load_index(out, encoder=Wrong())  # type: ignore[arg-type]
    target = out / "faiss.index"
    target.write_bytes(b"\1" * target.stat().st_size)
    with pytest.raises(IndexLoadError, match="faiss.index cannot be read"):
        load_index(out)


def test_unknown_model_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a local directory"):
        SentenceTransformerEncoder(str(tmp_path / "no-model"))


def test_faiss_vectors_that_do_not_match_the_passages_are_caught(
    flat: DenseRetriever, encoder: SentenceTransformerEncoder, tmp_path: Path,
) -> None:
    import faiss

    out = flat.save(tmp_path / "dense")
    short = faiss.IndexFlatIP(384)
    short.add(encoder.encode(["one passage only"]))
    faiss.write_index(short, str(out / "faiss.index"))  # a readable index of another corpus
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["faiss.index"] = (out / "faiss.index").stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match=r"faiss.index holds 1 vectors of dimension 384, the manifest says 900"):
        load_index(out, encoder=encoder)


def test_two_dense_shards_give_the_flat_top10_and_share_one_encoder(
    flat: DenseRetriever, encoder: SentenceTransformerEncoder, musique_dev: list[QuestionRecord], tmp_path: Path,
) -> None:
    from steper_ray.config import IndexConfig
    from steper_ray.retrieval.shards import ShardedRetriever, shard_rows
    from steper_ray.retrieval.tokenize import corpus_texts

    vectors = flat.index.reconstruct_n(0, flat.index.ntotal)
    by_text = dict(zip(corpus_texts(flat.passages.titles(), flat.passages.texts()), vectors))

    class Known:
        """The flat index's own vectors for its passages (no second encoding); queries encoded."""

        dim = 384
        calls = 0

        def encode(self, texts, batch_size=64, progress=False):
            Known.calls += 1
            known = [by_text.get(t) for t in texts]
            return np.stack(known) if all(v is not None for v in known) else encoder.encode(texts, batch_size)

    cfg = DenseConfig(device="cpu")
    rows = shard_rows(flat.passages.ids(), 2)
    shards = DenseRetriever.build_split(flat.passages, cfg, rows, encoder=Known(), progress=False)
    assert Known.calls == 1 and [len(s) for s in shards] == [len(r) for r in rows] and sum(map(len, rows)) == 900
    sharded = ShardedRetriever(shards, IndexConfig(kind="dense", shards=2, dense=cfg))
    queries = [r.question for r in musique_dev]
    exact, got = flat.search(queries, 10), sharded.search(queries, 10)
    assert [[h.id for h in hs] for hs in got] == [[h.id for h in hs] for hs in exact]

    loaded = load_index(sharded.save(tmp_path / "sharded"))
    assert isinstance(loaded, ShardedRetriever)
    assert loaded.shards[0].encoder is loaded.shards[1].encoder  # one model in memory, not one per shard
    assert [[h.id for h in hs] for hs in loaded.search(queries[:5], 10)] == [[h.id for h in hs] for hs in exact[:5]]

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.bench.retrieval import synthesize_corpus
from steper_ray.cli import main


def test_synthetic_corpus_keeps_real_passages(musique_corpus) -> None:  # type: ignore[no-untyped-def]
    big = synthesize_corpus(musique_corpus, 2500, seed=3)
    assert len(big) == 2500 and big[: len(musique_corpus)] == musique_corpus
    assert len({p.id for p in big}) == 2500
    assert synthesize_corpus(musique_corpus, 2500, seed=3) == big


@pytest.mark.slow
def test_bench_retrieval_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steper_ray.data.paths import SAMPLE_DIR

    data = tmp_path / "data"  # the first 15 questions of each bundled dev set: encoding stays short
    for name in ("hotpotqa", "musique", "2wikimultihopqa"):
        (data / name).mkdir(parents=True)
        lines = (SAMPLE_DIR / name / "dev.jsonl").read_text().splitlines()[:15]
        (data / name / "dev.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "bench"
    argv = ["bench", "retrieval", "--json", "--out", str(out), "--data-dir", str(data),
            "bench.retrieval.large_corpus_size=3000", "bench.retrieval.num_queries=20"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["corpora"]) == {"hotpotqa_dev", "musique_dev", "2wikimultihopqa_dev", "synthetic_3000"}
    for row in summary["corpora"].values():
        assert row["speedup"] > 0 and 0.99 <= row["top10_agreement"] <= 1
        assert row["bm25s"]["queries_per_s"] > 0 and row["rank_bm25"]["build_s"] > 0
    for name in ("hotpotqa_dev", "musique_dev", "2wikimultihopqa_dev"):
        assert set(summary["corpora"][name]["recall_bm25"]) == {"@2", "@4", "@8", "@10"}
        assert set(summary["corpora"][name]["recall_dense"]) == {"@2", "@4", "@8", "@10"}
    assert summary["dense"]["encode_passages_per_s"] > 0 and summary["dense"]["dim"] == 384
    assert summary["corpora"]["synthetic_3000"]["passages"] == 3000
    assert json.loads((out / "summary.json").read_text()) == summary


def test_synthetic_vectors_are_unit_mixtures_around_the_real_ones() -> None:
    import numpy as np

    from steper_ray.bench.retrieval_scale import synthetic_embeddings

    rng = np.random.default_rng(1)
    real = rng.standard_normal((50, 384)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    emb = synthetic_embeddings(real, 1200, chunk=500)
    assert emb.shape == (1200, 384) and emb.dtype == np.float32
    assert np.array_equal(emb[:50], real) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # each synthetic vector sits close to a real one (its main source), unlike random directions
    nearest = (emb[50:] @ real.T).max(axis=1)
    assert nearest.min() > 0.6 and np.array_equal(synthetic_embeddings(real, 1200, chunk=500), emb)


def test_scale_measures_every_engine_and_recall_against_flat(tmp_path: Path, musique_corpus,  # type: ignore[no-untyped-def]
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import numpy as np

    import steper_ray.bench.retrieval_scale as scale_mod
    import steper_ray.retrieval.dense as dense_mod
    from steper_ray.config import load_config

    class HashEncoder:
        """Stands in for MiniLM (no model load per probe): a fixed unit vector per text."""

        dim = 384
        path = None

        def __init__(self, *args: object) -> None:
            pass

        def encode(self, texts, batch_size=64, progress=False):  # type: ignore[no-untyped-def]
            rows = [np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).standard_normal(384)
                    for t in texts]
            v = np.asarray(rows, dtype=np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr(dense_mod, "SentenceTransformerEncoder", HashEncoder)
    # in this process (the stand-in encoder does not cross into a fresh one); RSS is then this process's
    monkeypatch.setattr(scale_mod, "_probe_fresh", lambda path, q, v: scale_mod._probe(str(path), q, v, scale_mod.K))
    cfg = load_config(None, ["bench.retrieval.num_queries=12", "bench.retrieval.encode_slice=400",
                             "index.dense.nlist=8", "index.dense.pq_m=16", "index.dense.pq_nbits=6"])
    questions = [f"question about {p.title}" for p in musique_corpus[:30]]
    out = scale_mod.run_scale(cfg, musique_corpus, questions, 2000, tmp_path / "work")
    assert out["passages"] == 2000 and out["queries"] == 12 and out["dense"]["encoded_real_passages"] == 400
    assert set(out["engines"]) == {"bm25s", "flat", "ivf", "hnsw", "ivfpq"}
    for name, row in out["engines"].items():
        assert row["build_s"] >= 0 and row["qps"] > 0 and row["disk_mb"] > 0 and row["retriever_rss_mb"] > 0, name
        assert ("recall_at_10" in row) == (name in ("ivf", "hnsw", "ivfpq"))
    assert all(0 < out["engines"][n]["recall_at_10"] <= 1 for n in ("ivf", "hnsw", "ivfpq"))
    assert out["real_check"]["passages"] == 400 and set(out["real_check"]["engines"]) == set(out["engines"])
    assert out["targets"]["ivfpq_recall_at_10"] == out["engines"]["ivfpq"]["recall_at_10"]
    assert not any((tmp_path / "work").iterdir())  # every measured index removed


def test_passages_flag_is_for_the_retrieval_bench_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "training", "--passages", "5000"]) == 2
    assert "--passages applies to bench retrieval" in capsys.readouterr().err

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

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_bench_index_compares_the_encoder_pool_with_single_encoders(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "corpus.jsonl").write_text("mine\n")  # a user's directory: refused, the file kept
    assert main(["bench", "index", "--out", str(mine), "--json", "bench.index.passages=40"]) == 2
    assert "holds other data (corpus.jsonl)" in capsys.readouterr().out
    assert [p.name for p in mine.iterdir()] == ["corpus.jsonl"] and (mine / "corpus.jsonl").read_text() == "mine\n"
    out = tmp_path / "bench"
    assert main(["bench", "index", "--out", str(out), "--json", "bench.index.passages=40",
                 "bench.index.part_passages=10", "bench.index.rounds=2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rounds = summary["rounds"]
    assert len(rounds) == 2 and summary["median_round"] in (0, 1)
    # the lower of two rounds' ratios is the median reported, with that round's own figures
    assert rounds[summary["median_round"]]["ratio"] == min(r["ratio"] for r in rounds) == summary["ratio"]
    assert summary["actor_pool_passages_per_s"] == rounds[summary["median_round"]]["actor_pool_passages_per_s"]
    assert summary["ratio_range"] == [min(r["ratio"] for r in rounds), max(r["ratio"] for r in rounds)]
    assert summary["target"]["met"] == (summary["ratio"] >= 0.9)
    assert summary["passages"] == 40 and summary["actors"] == 2 and summary["threads_per_encoder"] == 1
    assert summary["single_process_passages_per_s"] > 0 and summary["actor_pool_passages_per_s"] > 0
    assert summary["sum_of_single_processes_passages_per_s"] == pytest.approx(
        2 * summary["single_process_passages_per_s"], abs=0.02)
    assert summary["ratio"] == pytest.approx(
        summary["actor_pool_passages_per_s"] / summary["sum_of_single_processes_passages_per_s"], abs=0.002)
    assert all(sum(a["passages"] for a in r["per_actor"]) == 40 for r in rounds)
    for baseline in ("plain_processes_concurrent", "plain_ray_actors_concurrent"):
        assert summary[baseline]["passages_per_s"] > 0 and len(summary[baseline]["cpu_share"]) == 2
    assert summary["ratio_to_concurrent_plain_processes"] > 0 and summary["ratio_plain_ray_actors_to_plain_processes"] > 0
    assert all(0 < a["cpu_share"] <= 1.5 for a in summary["per_actor"])
    assert json.loads((out / "summary.json").read_text())["ratio"] == summary["ratio"]
    assert sorted(p.name for p in out.iterdir()) == [".steper-bench", "summary.json"]  # its marker; scratch removed

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main


@pytest.mark.slow
def test_bench_serving_measures_every_level_on_both_sides(tmp_path: Path, tiny_model_dir: Path, serve_url: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "serving", "--out", str(out), "--json", f"bench.serving.model={tiny_model_dir}",
                 "bench.serving.concurrency=[1, 3]", "bench.serving.requests_per_level=6",
                 "bench.serving.max_tokens=6", "bench.serving.max_steps=2", "bench.serving.reasoner_cpus=1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [lv["concurrency"] for lv in summary["levels"]] == [1, 3]
    for lv in summary["levels"]:
        for side in ("http", "in_process"):
            m = lv[side]
            assert m["requests"] == 6 and m["failed"] == 0 and m["requests_per_s"] > 0 and m["tokens_per_s"] > 0
            assert 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"]
        assert lv["overhead_ratio"] == pytest.approx(lv["in_process"]["requests_per_s"] / lv["http"]["requests_per_s"], rel=1e-2)
        assert lv["p50_overhead_ms"] == pytest.approx(lv["http"]["p50_ms"] - lv["in_process"]["p50_ms"], abs=0.2)
    # concurrency 1 is held to the per-request p50 target, >= 4 to the throughput one, 3 to none
    one = summary["levels"][0]
    assert isinstance(one["per_request_p50_overhead_ms"], float)
    parts = one["per_request_p50_overhead_parts"]
    assert parts["edge_ms"] > 0 and isinstance(parts["loop_ms"], float)  # HTTP costs something; the loop may be either way
    # the replica's Server-Timing split the loop: retrieval over the deployment costs more than in memory
    assert parts["retrieval_ms"] > 0 and isinstance(parts["engine_ms"], float)
    assert isinstance(one["per_request_p50_overhead_outside_engine_ms"], float)
    assert one["target"]["met"] == (one["per_request_p50_overhead_ms"] <= 50.0)
    assert summary["levels"][1]["target"] == {} and summary["requests_per_level"] == {"1": 6, "3": 6}
    assert json.loads((out / "summary.json").read_text()) == summary
    from ray import serve

    assert "bench" not in serve.status().applications  # removed, and the running Serve left up
    assert serve.status().proxies

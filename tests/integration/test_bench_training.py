from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.bench.out_dir import MARKER
from steper_ray.cli import main


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_bench_training_reports_throughput_and_padding(tmp_path: Path, tiny_model_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    out = tmp_path / "bench"
    # reuse the session's tiny model, as a rerun reuses the one an earlier run of the benchmark built
    shutil.copytree(tiny_model_dir, out / "model")
    (out / MARKER).write_text("training\n")
    assert main(["bench", "training", "--out", str(out), "--json", "bench.training.steps=4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["examples"] > 100 and summary["examples_encoded"] == summary["examples"]
    waste = summary["padding_waste"]
    assert 0 <= waste["ours"] < waste["naive_per_task"] < 1
    rates = summary["tokens_per_s"]
    assert len(rates) == 5 and rates.pop("worker_body_without_ray_no_cluster_running") is None
    assert all(v > 0 for v in rates.values())
    assert summary["ratio_ray_over_plain"] > 0 and summary["steps_timed"] == 2
    # one Ray Train worker against the same worker body without Ray (framework overhead)
    assert summary["ratio_one_worker_over_plain"] > 0 and summary["ratio_one_worker_over_plain_torch"] > 0
    target = summary["target"]
    assert (target["field"], target["goal"]) == ("ratio_one_worker_over_plain", 0.9)
    assert target["met"] == (summary["ratio_one_worker_over_plain"] >= 0.9)
    assert set(summary["wall_s_with_startup"]) == {"worker_body_without_ray", "worker_body_no_cluster_running",
                                                   "ray_train_1_worker", "ray_train_2_workers"}
    # the session's Ray was already up: no run without a cluster, so nothing to compare it with
    assert summary["idle_cluster_share"] is None and summary["ratio_one_worker_over_plain_no_cluster"] is None
    assert summary["wall_s_with_startup"]["worker_body_no_cluster_running"] is None
    assert (out / "plain_worker/model/model.safetensors").is_file()

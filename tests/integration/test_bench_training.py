from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_bench_training_reports_throughput_and_padding(tmp_path: Path, tiny_model_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    out = tmp_path / "bench"
    shutil.copytree(tiny_model_dir, out / "model")  # reuse the session's tiny model
    assert main(["bench", "training", "--out", str(out), "--json", "bench.training.steps=4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["examples"] > 100 and summary["examples_encoded"] == summary["examples"]
    waste = summary["padding_waste"]
    assert 0 <= waste["ours"] < waste["naive_per_task"] < 1
    rates = summary["tokens_per_s"]
    assert len(rates) == 2 and all(v > 0 for v in rates.values())
    assert summary["ratio_ray_over_plain"] > 0 and summary["steps_timed"] == 2

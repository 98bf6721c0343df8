from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.usefixtures("ray_session")
def test_bench_generation_compares_the_same_work(tmp_path: Path, tiny_model_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("vllm")
    out = tmp_path / "bench"
    assert main(["bench", "generation", "--out", str(out), "--json", f"bench.generation.model={tiny_model_dir}",
                 "bench.generation.num_questions=12", "bench.generation.batch_size=4",
                 "bench.generation.max_tokens=8"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    plain, ray_side = summary["plain_loop"], summary["ray_data"]
    # Same questions, model and greedy decoding: both sides generate the very same tokens.
    assert plain["questions"] == ray_side["questions"] == 8  # the first batch is warm-up
    assert plain["total_tokens"] == ray_side["total_tokens"] > 0  # batches may finish in any order
    assert summary["ratio_questions_per_s"] > 0 and summary["ratio_tokens_per_s"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary

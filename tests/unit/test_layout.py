"""The run layout: every default path under run_dir, checked once here, and the commands that
write into a run never replace what they did not create."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.config import load_config
from steper_ray.layout import RunLayout, TrainDir, predictions_file, source_name
from steper_ray.retrieval import load_index

R = Path("/runs/r")

DEFAULTS = {
    "config_file": "config.yaml",
    "summary": "summary.json",
    "report": "report.html",
    "logs": "logs",
    "index_root": "index",
    "train_index": "index/train",
    "serve_index": "index/hotpotqa",
    "command_index": "index/index",
    "retrieval_eval": "retrieval_eval",
    "tiny_student": "models/student",
    "generate": "generate",
    "traces": "generate/traces",
    "examples": "generate/examples",
    "train": "train",
    "export": "train/model",
    "evaluate": "evaluate",
    "evaluate_base": "evaluate_base",
    "compare": "compare",
}


@pytest.mark.parametrize(("attr", "rel"), sorted(DEFAULTS.items()))
def test_default_paths(attr: str, rel: str) -> None:
    layout = RunLayout(load_config(None, [f"run_dir={R}"]))
    assert getattr(layout, attr) == R / rel


def test_paths_of_stages_files_and_benchmarks() -> None:
    layout = RunLayout(load_config(None, [f"run_dir={R}"]))
    assert layout.log_file("generate") == R / "logs/generate.log"
    assert layout.dev_index("musique") == R / "index/musique"
    assert layout.bench("training") == R / "bench/training"
    assert {s: layout.stage_dir(s).relative_to(R).as_posix() for s in
            ("index", "retrieval_eval", "generate", "evaluate_base", "train", "evaluate")} == {
        "index": "index", "retrieval_eval": "retrieval_eval", "generate": "generate",
        "evaluate_base": "evaluate_base", "train": "train", "evaluate": "evaluate"}
    with pytest.raises(KeyError, match="unknown stage"):
        layout.stage_dir("serve")
    files = layout.trained
    assert files == TrainDir(R / "train")
    assert {k: getattr(files, k).relative_to(R).as_posix() for k in
            ("export", "metrics", "state", "sigma_plot", "local_checkpoints", "ray_storage", "tensorboard")} == {
        "export": "train/model", "metrics": "train/metrics.jsonl", "state": "train/train_state.json",
        "sigma_plot": "train/sigmas.png", "local_checkpoints": "train/checkpoints", "ray_storage": "train/ray",
        "tensorboard": "train/tb"}
    gen = layout.generated
    assert (gen.traces, gen.examples, gen.damaged) == (R / "generate/traces", R / "generate/examples",
                                                       R / "generate/damaged")
    assert predictions_file(layout.evaluate, "hotpotqa") == R / "evaluate/predictions/hotpotqa.jsonl"


def test_corpus_setting_gives_its_own_stage_indexes() -> None:
    pooled = RunLayout(load_config(None, [f"run_dir={R}", "data.corpus=pooled"]))
    assert pooled.train_index == R / "index/pooled/train" and pooled.dev_index("musique") == R / "index/pooled/musique"
    assert pooled.serve_index == R / "index/pooled/hotpotqa" and pooled.corpus_index is None
    wiki = RunLayout(load_config(None, [f"run_dir={R}", "data.corpus=/data/wiki/psgs_w100.tsv.gz"]))
    shared = wiki.corpus_index
    assert shared is not None and shared.parent == R / "index/corpus" and shared.name.startswith("psgs_w100-")
    # one index for generation, every dev set and serving
    assert wiki.train_index == wiki.dev_index("musique") == wiki.dev_index("hotpotqa") == wiki.serve_index == shared
    assert wiki.corpus_stamp == shared.parent / f"{shared.name}.source.json" and pooled.corpus_stamp is None
    other = RunLayout(load_config(None, [f"run_dir={R}", "data.corpus=/elsewhere/psgs_w100.tsv.gz"])).corpus_index
    assert other is not None and other != shared  # same file name, another corpus
    # settings that name a directory still win
    given = RunLayout(load_config(None, [f"run_dir={R}", "data.corpus=pooled", "generate.index=/gi",
                                         "evaluate.index_dir=/ix"]))
    assert given.train_index == Path("/gi") and given.dev_index("musique") == Path("/ix/musique")
    # `steper-ray index` without --out never takes a stage index's name
    assert RunLayout(load_config(None, [f"run_dir={R}", "index.dataset=/d/pooled.jsonl"])).command_index == \
        R / "index/pooled-index"


def test_settings_move_their_paths_and_what_follows_them() -> None:
    layout = RunLayout(load_config(None, [
        f"run_dir={R}", "generate.out=/g", "train.out=/t", "evaluate.out=/e", "evaluate.index_dir=/ix",
        "generate.index=/gi", "index.out=/io"]))
    assert layout.generate == Path("/g") and layout.traces == Path("/g/traces")
    assert layout.examples == Path("/g/examples")  # train.examples follows generate.out
    assert layout.export == Path("/t/model") and layout.evaluate == Path("/e")
    assert layout.dev_index("hotpotqa") == Path("/ix/hotpotqa") and layout.serve_index == Path("/ix/hotpotqa")
    assert layout.train_index == Path("/gi") and not layout.train_index_is_ours
    assert not layout.dev_indexes_are_ours and layout.command_index == Path("/io")
    assert layout.stage_dir("generate") == Path("/g") and layout.stage_dir("train") == Path("/t")
    explicit = RunLayout(load_config(None, ["generate.out=/g", "train.examples=/x.parquet", "serve.index=/s"]))
    assert explicit.examples == Path("/x.parquet") and explicit.serve_index == Path("/s")
    assert RunLayout(load_config(None, ["data.dev=[]"])).serve_index is None


@pytest.mark.parametrize(("source", "name"), [
    ("sample:musique/dev.jsonl", "musique-dev"),
    ("/data/hotpot_dev_distractor_v1.json.gz", "hotpot_dev_distractor_v1"),
    ("corpus files/wiki abstracts.jsonl", "wiki_abstracts"),
    ("sample:train.json", "train"),
])
def test_source_name(source: str, name: str) -> None:
    assert source_name(source) == name


def test_command_index_never_takes_a_stage_index_name() -> None:
    dev = "data.dev=[{name: musique-dev, path: 'sample:musique/dev.jsonl'}]"
    assert RunLayout(load_config(None, [f"run_dir={R}", "index.dataset=sample:musique/dev.jsonl"])
                     ).command_index == R / "index/musique-dev"
    assert RunLayout(load_config(None, [f"run_dir={R}", dev, "index.dataset=sample:musique/dev.jsonl"])
                     ).command_index == R / "index/musique-dev-index"
    assert RunLayout(load_config(None, [f"run_dir={R}", "index.corpus=/c/train.jsonl"])
                     ).command_index == R / "index/train-index"


def test_a_moved_run_is_found_by_its_own_config(tmp_path: Path) -> None:
    run = tmp_path / "moved"
    run.mkdir()
    (run / "config.yaml").write_text("run_dir: /elsewhere/old\ngenerate:\n  out: null\ntrain:\n  out: null\n")
    layout = RunLayout.of_run(run)
    assert layout.run_dir == run and layout.evaluate == run / "evaluate"
    (run / "config.yaml").write_text("run_dir: x\nnot_a_section: 1\n")  # no longer valid: defaults
    assert RunLayout.of_run(run).train == run / "train"


def test_serving_and_evaluation_do_not_import_the_training_code() -> None:
    code = ("import sys, steper_ray.serve.app, steper_ray.evaluate.job; "
            "print(sorted(m for m in sys.modules if m.startswith('steper_ray.train') or m == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_index_without_out_keeps_the_other_indexes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The data-loss case: an index written to R/index/hotpotqa, then one without --out."""
    run = tmp_path / "R"
    assert main(["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", str(run / "index/hotpotqa"),
                 f"run_dir={run}"]) == 0
    assert main(["index", "--dataset", "sample:musique/dev.jsonl", f"run_dir={run}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(run / "index/musique-dev")
    assert sorted(p.name for p in (run / "index").iterdir()) == ["hotpotqa", "musique-dev"]
    assert len(load_index(run / "index/hotpotqa")) == 500 and len(load_index(run / "index/musique-dev")) == 900
    # the same command again rebuilds its own index in place
    assert main(["index", "--dataset", "sample:musique/dev.jsonl", f"run_dir={run}"]) == 0
    assert sorted(p.name for p in (run / "index").iterdir()) == ["hotpotqa", "musique-dev"]


def test_an_out_holding_other_data_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    assert main(["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "holds other data (keep.txt)" in err and "Traceback" not in err
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary directory left
    # a directory of indexes is not an index either
    run = tmp_path / "R"
    assert main(["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", str(run / "index/hotpotqa")]) == 0
    assert main(["index", "--dataset", "sample:musique/dev.jsonl", "--out", str(run / "index")]) == 2
    assert "holds other data (hotpotqa/)" in capsys.readouterr().err
    assert len(load_index(run / "index/hotpotqa")) == 500
    # names an index uses are not enough: without its manifest, or with files it does not list, it is not ours
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1/summary.json").write_text('{"mine": 1}')
    (tmp_path / "d2/bm25s").mkdir(parents=True)
    (tmp_path / "d2/bm25s/mydata.txt").write_text("x")
    (run / "index/hotpotqa/bm25s/mydata.txt").write_text("x")
    for d, said in (("d1", "holds other data (summary.json) and no manifest.json"),
                    ("d2", "holds other data (bm25s/) and no manifest.json"),
                    (str(run / "index/hotpotqa"), "holds files its index does not list (bm25s/mydata.txt)")):
        assert main(["index", "--dataset", "sample:musique/dev.jsonl", "--out", str(tmp_path / d)]) == 2
        assert said in capsys.readouterr().err
    assert (tmp_path / "d1/summary.json").read_text() == '{"mine": 1}' and (tmp_path / "d2/bm25s/mydata.txt").is_file()
    assert (run / "index/hotpotqa/bm25s/mydata.txt").is_file() and len(load_index(run / "index/hotpotqa")) == 500


def test_an_out_that_is_a_file_is_refused_without_writing_a_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default run_dir is relative: a refused build must not create it
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", str(notes)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt is a file, not a directory" in err and "Traceback" not in err
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no runs/local/logs/index.log


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_created_directories_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert main(["index", "--dataset", "sample:2wikimultihopqa/dev.jsonl", f"run_dir={tmp_path / 'R'}"]) == 0
    finally:
        os.umask(old)
    built = tmp_path / "R/index/2wikimultihopqa-dev"
    for d in (tmp_path / "R", tmp_path / "R/index", built):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask, d

"""`steper-ray ablate` without Ray: mode -> loss config, per-mode config copies, bad input, and the
report written from given summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.commands.ablate import (
    CONFIG_MARK,
    FIXED_WEIGHTS,
    check_ablate,
    mode_config,
    mode_loss,
)
from steper_ray.config import ABLATION_MODES, LossConfig, SteperConfig, dump_config, load_config
from steper_ray.errors import UserError
from steper_ray.evaluate.ablation import PAPER_REFERENCE, write_ablation_report


def test_every_mode_maps_to_the_papers_loss_config() -> None:
    base = LossConfig(target="next", sigma_lr=0.05, init_log_var=0.5)
    got = {m: mode_loss(m, base) for m in ABLATION_MODES}
    assert {m: (c.mode, c.weights) for m, c in got.items() if m in FIXED_WEIGHTS} == {
        "uniform": ("uniform", [1.0, 1.0, 1.0]),
        "first_heavy": ("uniform", [1.5, 1.0, 0.5]),
        "last_heavy": ("uniform", [0.5, 1.0, 1.5]),
    }
    assert got["steper"].mode == "steper" and got["vanilla_kd"].mode == "vanilla_kd"
    # the rest of train.loss is the user's, for every mode
    assert all((c.target, c.sigma_lr, c.init_log_var) == ("next", 0.05, 0.5) for c in got.values())
    assert SteperConfig().ablate.modes == list(ABLATION_MODES)
    with pytest.raises(UserError, match="valid modes: steper, uniform, first_heavy, last_heavy, vanilla_kd"):
        mode_loss("half_heavy", base)


def test_each_mode_trains_and_evaluates_into_its_own_directory(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", "train.run_name=s", "evaluate.limit=3"])
    out = tmp_path / "ablate"
    m = mode_config(cfg, "first_heavy", out)
    assert m.train.out == str(out / "first_heavy" / "train") and m.train.run_name == "s-first_heavy"
    assert m.evaluate.out == str(out / "first_heavy" / "evaluate") and m.evaluate.limit == 3
    assert m.train.loss.weights == [1.5, 1.0, 0.5] and m.evaluate.model is None  # the mode's export (hf)
    assert m.run_dir == cfg.run_dir and m.data == cfg.data  # same traces, same dev sets and indexes
    assert cfg.train.out is None and cfg.train.loss.mode == "steper"  # the original is untouched
    vllm = load_config(None, ["evaluate.model.kind=vllm", "evaluate.model.model=/models/base",
                              "evaluate.model.max_tokens=96"])
    e = mode_config(vllm, "vanilla_kd", out).evaluate.model
    assert e is not None and (e.kind, e.model, e.max_tokens) == ("vllm", str(out / "vanilla_kd/train/model"), 96)


@pytest.mark.parametrize(
    ("argv", "messages"),
    [
        (["--modes", "steper,half_heavy,vanilla"], [
            "2 problem(s)", "ablate.modes.1", "got 'half_heavy'", "ablate.modes.2", "got 'vanilla'",
            "'steper', 'uniform', 'first_heavy', 'last_heavy' or 'vanilla_kd'"]),
        (["--modes", ""], ["ablate.modes", "at least 1 item"]),
        (["--modes", "uniform,uniform"], ["ablate.modes repeats ['uniform']"]),
        (["--modes", "steper,steper,bogus"], ["ablate.modes has unknown modes ['bogus']", "and repeats ['steper']"]),
        (["train.loss.weights=[1.5, 1]", "--modes", "steper,bogus"], [
            "2 problem(s)", "it needs three numbers from 0 to 100", "got 'bogus'"]),
        (["evaluate.model.kind=evidence", "train.examples=/nonexistent/examples",
          "reasoning.teacher_prompt=/nonexistent/prompt.yaml"], [
            "evaluate.model.kind is 'evidence'", "train.examples /nonexistent/examples does not exist",
            "reasoning.teacher_prompt: teacher prompt file /nonexistent/prompt.yaml does not exist"]),
    ],
)
def test_bad_input_exits_2_with_every_problem(argv: list[str], messages: list[str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablate", f"run_dir={tmp_path}", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for message in messages:
        assert message in err
    assert not (tmp_path / "ablate").exists()  # nothing started


def test_check_ablate_accepts_the_shipped_configs() -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("local.yaml", "cluster.yaml"):
        check_ablate(load_config(repo / "jobs" / "configs" / name))


def test_report_has_one_row_per_mode_and_the_papers_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    drawn: list[tuple[str, list[float]]] = []
    real_bar = Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda ax, x, h, *a, **k: (drawn.append((k["label"], list(h))),
                                                                 real_bar(ax, x, h, *a, **k))[1])
    metrics = {"hotpotqa": {"em": 0.25, "f1": 0.5, "acc": 0.75, "questions": 4},
               "musique": {"em": 0.0, "f1": 0.125, "acc": 0.0, "questions": 4}}
    modes = {
        "vanilla_kd": {"loss": mode_loss("vanilla_kd", LossConfig()).model_dump(),
                       "train": {"steps": 3, "examples_used": 10}, "metrics": metrics},
        "last_heavy": {"loss": mode_loss("last_heavy", LossConfig()).model_dump(),
                       "train": {"steps": 5, "examples_used": 30}, "metrics": metrics},
    }
    setting = {"student": "runs/x/models/student", "params": 850_000, "traces": "teacher evidence",
               "evaluator": "hf", "dev_questions": {"hotpotqa": 4, "musique": 4}}
    paths = write_ablation_report(modes, setting, tmp_path)
    text = Path(paths["report"]).read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith(("| vanilla_kd |", "| last_heavy |"))]
    assert rows[:2] == [
        "| vanilla_kd | agg only, whole chain | 3 | 10 | 25.0 | 50.0 | 75.0 | 0.0 | 12.5 | 0.0 |",
        "| last_heavy | weights 0.5/1/1.5, target cumulative | 5 | 30 | 25.0 | 50.0 | 75.0 | 0.0 | 12.5 | 0.0 |",
    ]
    assert "| mode | loss | steps | examples | hotpotqa EM | hotpotqa F1 | hotpotqa Acc | musique EM |" in text
    assert "- student: `runs/x/models/student` (850,000 parameters)" in text
    assert "- traces: teacher evidence" in text and "mode: hotpotqa 4, musique 4" in text
    assert "the paper's reported figures (not produced by this code)" in text
    paper = text.split("## Reference", 1)[1]
    assert "| steper | 51.0 | 62.8 | 61.0 | 63.6 | 34.1 |" in paper
    assert "| vanilla_kd | 46.4 | 57.3 | 54.8 | 62.2 | 30.1 |" in paper
    assert "| uniform | - | - | 58.4 | - | - |" in paper
    assert "| first_heavy | - | - | 57.7 | - | - |" in paper and "| last_heavy | - | - | 58.0 | - | - |" in paper
    assert set(PAPER_REFERENCE) == set(ABLATION_MODES)
    assert Path(paths["plot"]).stat().st_size > 10_000
    # the chart in percent, like the table beside it: EM, F1, Acc bars per mode over (hotpotqa, musique)
    assert drawn == [("vanilla_kd", [25.0, 0.0]), ("last_heavy", [25.0, 0.0]), ("vanilla_kd", [50.0, 12.5]),
                     ("last_heavy", [50.0, 12.5]), ("vanilla_kd", [75.0, 0.0]), ("last_heavy", [75.0, 0.0])]


def test_modes_that_cannot_fill_an_optimizer_step_are_all_named_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    examples = tmp_path / "examples.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"q{q}-{t}", "task": t, "prompt": "p", "completion": "c"} for q in range(4)
                                         for t in ("init", "exp", "agg")]), examples)
    assert main(["ablate", "--modes", "steper,vanilla_kd,last_heavy", f"run_dir={tmp_path}",
                 f"train.examples={examples}", "train.grad_accum=3"]) == 2
    err = capsys.readouterr().err
    assert "vanilla_kd: too few step examples" in err and "trains on 4 agg examples" in err
    assert "steper:" not in err and "last_heavy:" not in err  # 12 examples fill a step of 3 on 2 workers
    assert "train.grad_accum=3" in err and not (tmp_path / "ablate" / "vanilla_kd").exists()


def test_an_out_holding_other_files_or_a_damaged_summary_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    mine = tmp_path / "mine"  # a user's directory: its config.yaml must survive
    mine.mkdir()
    (mine / "config.yaml").write_text("keep: me\n")
    (mine / "notes.txt").write_text("mine\n")
    base = ["ablate", f"run_dir={tmp_path / 'run'}", f"train.examples={examples}", "--modes", "uniform"]
    assert main([*base, "--out", str(mine)]) == 2
    assert "holds other data (notes.txt)" in capsys.readouterr().err
    assert (mine / "config.yaml").read_text() == "keep: me\n"
    assert main([*base, "--out", str(mine / "notes.txt" / "sub")]) == 2  # under a file: no OSError traceback
    assert "cannot create" in capsys.readouterr().err
    (mine / "notes.txt").unlink()  # names ablate writes, but not written by ablate: still refused
    (mine / "steper").mkdir()
    assert main([*base, "--out", str(mine)]) == 2
    assert "holds other data (config.yaml, steper/)" in capsys.readouterr().err
    (mine / "steper" / "thesis.tex").write_text("mine\n")  # a mode's name holding other files
    (mine / "config.yaml").write_text("# steper-ray ablate: the configuration of this ablation\n")
    assert main([*base, "--out", str(mine)]) == 2
    assert "holds other data (steper/)" in capsys.readouterr().err
    assert (mine / "steper" / "thesis.tex").read_text() == "mine\n"
    # modes an earlier run finished, whose summaries were damaged since: all named now, not after training
    out = tmp_path / "ablate"
    for mode, content in (("steper", '{"metrics":'), ("uniform", '{"metrics": {"dv": {"em": "x"}}}')):
        (out / mode / "evaluate").mkdir(parents=True)
        (out / mode / "evaluate" / "summary.json").write_text(content)
    (out / "summary.json").write_text('{"command": "ablate"}')
    assert main([*base, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'steper' / 'evaluate' / 'summary.json'} does not read as JSON" in err
    assert f"{out / 'uniform' / 'evaluate' / 'summary.json'} holds 'dv' metrics that are not numbers: em" in err
    assert f"delete {out / 'steper'}" in err and "Traceback" not in err
    assert not (out / "config.yaml").exists()  # a refusal writes nothing


def test_a_rerun_with_every_mode_evaluated_only_rebuilds_the_table(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    out = tmp_path / "ablate"
    metrics = {"dv": {"questions": 2, "em": 0.5, "f1": 0.5, "acc": 0.5}}
    for mode in ("steper", "uniform"):
        for stage, summary in (("train", {"command": "train", "steps": 2}),
                               ("evaluate", {"command": "evaluate", "metrics": metrics, "model": {"kind": "hf"}})):
            (out / mode / stage).mkdir(parents=True)
            (out / mode / stage / "summary.json").write_text(json.dumps(summary))
    settings = [f"run_dir={tmp_path / 'run'}", f"train.examples={examples}"]
    (out / "config.yaml").write_text(CONFIG_MARK + dump_config(load_config(None, settings)))  # as ablate wrote it
    argv = ["ablate", *settings, "--modes", "steper", "--out", str(out), "--json"]
    assert main(argv) == 0  # no training: steper skipped, uniform shown as an earlier run
    summary = json.loads((out / "summary.json").read_text())
    assert {m: r["status"] for m, r in summary["modes"].items()} == {"steper": "skipped", "uniform": "earlier run"}
    assert "| steper |" in (out / "ablation.md").read_text()
    # other settings would put rows of another setup in the same table: refused, nothing changed
    recorded = (out / "config.yaml").read_text()
    assert main([*argv, "train.epochs=1", "evaluate.limit=5", "train.log_every=5"]) == 2
    failure = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert "holds modes trained or evaluated with other settings: evaluate.limit: None there, 5 now; " \
           "train.epochs: 2 there, 1 now. Rows of one ablation differ only in the loss" in failure
    assert f"`--config {out / 'config.yaml'}`" in failure and "log_every" not in failure  # operational: allowed
    assert (out / "config.yaml").read_text() == recorded
    assert main(["ablate", "--config", str(out / "config.yaml"), "--modes", "steper", "--out", str(out)]) == 0


def test_examples_that_are_not_step_examples_exit_2_before_training(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = tmp_path / "examples.txt"
    text.write_text("hello\n")
    no_task = tmp_path / "no_task.parquet"
    pq.write_table(pa.table({"id": ["a"]}), no_task)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ablate", f"run_dir={tmp_path / 'run'}", f"train.examples={empty}", "--modes", "uniform"]) == 2
    assert f"train.examples {empty} holds no step examples (no *.parquet)" in capsys.readouterr().err
    for examples in (text, no_task):
        assert main(["ablate", f"run_dir={tmp_path / 'run'}", f"train.examples={examples}", "--modes", "uniform"]) == 2
        err = capsys.readouterr().err
        assert f"{examples} does not read as step examples" in err and "Traceback" not in err


def test_a_problem_every_mode_shares_is_one_line_naming_the_modes(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "examples"
    empty.mkdir()
    argv = ["ablate", f"run_dir={tmp_path}", f"train.examples={empty}", "--modes", "steper,uniform,vanilla_kd"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "holds no step examples" in ln]
    assert len(lines) == 1 and lines[0].strip().startswith("- steper, uniform, vanilla_kd: train.examples")
    assert not list((tmp_path / "ablate").glob("*/train"))  # nothing trained


@pytest.mark.parametrize(
    ("file_text", "argv", "message"),
    [
        ('train: "lr=0.1 epochs=3"\n', ["train.examples=/x"],
         "train: overrides train.examples go inside train, which the config file sets to a str"),
        ("ablate: [steper]\n", ["--modes", "uniform"],
         "ablate: overrides ablate.modes go inside ablate, which the config file sets to a list"),
        ("train:\n  loss: uniform\n", ["train.loss.target=next", "train.loss.sigma_lr=0.1"],
         "overrides train.loss.target, train.loss.sigma_lr go inside train.loss"),
    ],
)
def test_overrides_into_a_section_the_file_gives_as_a_value_are_refused(
        file_text: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(file_text)
    assert main(["ablate", "--config", str(cfg_file), f"run_dir={tmp_path}", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "1 problem(s)" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.loss.init_log_var=-100", "train.loss.init_log_var"),
        ("train.loss.weights=[1e308, 1, 1]", "loss.weights is [1e+308, 1.0, 1.0]"),
        ("train.loss.weights=[1e-3, 1, 1e3]", "loss.weights is [0.001, 1.0, 1000.0]"),  # PyYAML reads 1e-3 as text
        ("reasoning.num_demos=0", "reasoning.num_demos"),
        ("train.loss.weights=[true, 1, 1]", "loss.weights [True, 1, 1] holds true/false"),
    ],
)
def test_loss_and_demo_settings_out_of_range_are_refused(override: str, message: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablate", f"run_dir={tmp_path}", override]) == 2
    assert message in capsys.readouterr().err


def test_a_run_dir_that_is_a_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["ablate", f"run_dir={afile}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot write the log {afile}/logs/ablate.log" in err
    assert afile.read_text() == "mine"


def test_the_settings_check_covers_the_traces_and_needs_the_recorded_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ablate"
    (out / "steper" / "train").mkdir(parents=True)
    (out / "steper" / "train" / "summary.json").write_text(json.dumps({"command": "train", "steps": 2}))
    empty = tmp_path / "empty"
    empty.mkdir()
    ran_with = [f"run_dir={tmp_path / 'runA'}"]
    (out / "config.yaml").write_text(CONFIG_MARK + dump_config(load_config(None, ran_with)))
    base = ["ablate", "--modes", "uniform", "--out", str(out), "--json"]
    # other traces: another run's generate/examples, or another teacher
    for other in ([f"run_dir={tmp_path / 'runB'}"], [*ran_with, "generate.filter.match=contains"]):
        assert main([*base, *other]) == 2
        assert "holds modes trained or evaluated with other settings" in capsys.readouterr().out
    # the recorded settings missing or unreadable: refused, not skipped
    recorded = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(recorded + "bogus_key: 1\n")
    assert main([*base, *ran_with]) == 2
    assert "does not load (bogus_key: unknown key" in capsys.readouterr().out
    (out / "config.yaml").unlink()
    (out / "summary.json").write_text(json.dumps({"command": "ablate"}))
    assert main([*base, *ran_with]) == 2
    assert "holds trained or evaluated modes but not config.yaml" in capsys.readouterr().out
    # --out that is the run directory (or holds it): refused for that reason
    assert main(["ablate", f"run_dir={tmp_path / 'same'}", "--out", str(tmp_path / "same"), f"train.examples={empty}"]) == 2
    assert "is the run directory" in capsys.readouterr().err
    assert main(["ablate", f"run_dir={tmp_path / 'x' / 'run'}", "--out", str(tmp_path / "x"), f"train.examples={empty}"]) == 2
    assert "is the run directory" in capsys.readouterr().err

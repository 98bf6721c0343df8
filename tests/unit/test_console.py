"""The quiet console: a stage's output of every kind lands in its log, the terminal gets one
line per stage, and a failed stage shows its log's tail and path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from steper_ray.cli import main
from steper_ray.console import Console, StageFailed, run_stage, tail
from steper_ray.progress import progress


def _noisy_stage() -> str:
    print("python print to stdout")
    os.write(2, b"raw write to descriptor 2\n")
    logging.getLogger("steper_ray.some_module").info("an info record")
    warnings.warn("a library warning", UserWarning, stacklevel=1)
    subprocess.run([sys.executable, "-c", "import sys; print('child stdout'); print('child stderr', file=sys.stderr)"],
                   check=True)
    bar = progress()
    bar.start(10, "questions")
    bar.advance(4)
    bar.advance(6)
    return "result"


def test_a_stage_keeps_everything_but_its_progress_line_off_the_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console = Console()
    log_file = tmp_path / "logs/generate.log"
    with console.session("generate", tmp_path / "logs/command.log"):
        assert run_stage(console, "generate", log_file, _noisy_stage) == "result"
    out = capsys.readouterr()
    assert out.out.splitlines() == [line for line in out.out.splitlines() if line.startswith("generate")]
    assert len(out.out.splitlines()) == 1 and "10/10 questions" in out.out  # not a terminal: one line at the end
    text = log_file.read_text()
    for expected in ("python print to stdout", "raw write to descriptor 2", "an info record", "a library warning",
                     "child stdout", "child stderr", "===== stage generate"):
        assert expected in text, expected


def test_a_failed_stage_shows_the_tail_of_its_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        for i in range(30):
            print(f"line {i}")
        raise RuntimeError("disk on fire")

    console = Console()
    log_file = tmp_path / "logs/train.log"
    with pytest.raises(StageFailed) as info:
        with console.session("train", tmp_path / "logs/train.log"):
            run_stage(console, "train", log_file, boom)
    assert isinstance(info.value.__cause__, RuntimeError) and str(info.value) == str(log_file)
    out = capsys.readouterr()
    assert "train           failed" in out.out
    assert f"train failed; full log: {log_file}" in out.err
    assert "RuntimeError: disk on fire" in out.err  # the traceback's last line is in the tail
    assert "line 29" in log_file.read_text() and "Traceback" in log_file.read_text()
    assert tail(log_file, 3)[-1].startswith("RuntimeError: disk on fire")


def test_commands_log_into_the_run_and_print_only_their_result(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "R"
    assert main(["index", "--dataset", "sample:2wikimultihopqa/dev.jsonl", f"run_dir={run}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("index ") and lines[1].startswith("indexed 425 passages")
    assert "indexing 425 passages" in (run / "logs/index.log").read_text()
    # a user mistake inside the stage: the log's tail before it, then the message once, exit 2
    assert main(["index", "--dataset", "sample:2wikimultihopqa/malformed.jsonl", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert f"full log: {run / 'logs/index.log'}" in err and "no paragraphs to index" in err.splitlines()[-1]
    assert err.count("no paragraphs to index") == 1
    assert "stage index failed: " in (run / "logs/index.log").read_text()  # the log keeps its record


def test_progress_lines_show_rate_and_eta(tmp_path: Path) -> None:
    from steper_ray.progress import Progress

    bar = Progress("evaluate")
    bar.start(100, "questions")
    bar.update(50)
    line = bar.line()
    assert line.startswith("evaluate") and "50/100 questions" in line and "questions/s" in line and "ETA" in line


def test_a_count_resumed_after_a_nested_job_keeps_its_start_and_rate() -> None:
    import io
    import time

    from steper_ray.console import _TerminalProgress
    from steper_ray.progress import Progress

    for bar in (Progress("bench-index"), _TerminalProgress("bench-index", io.StringIO())):
        bar.start(8, "sides measured")
        t0 = bar.t0
        bar.start(1200, "passages encoded")  # a nested job reports in its own unit
        bar.update(1200)
        bar.start(8, "sides measured", 1, since=t0)  # back to the outer count, not 1201 passages
        bar.advance()
        assert (bar.done, bar.total, bar.unit, bar.t0) == (2, 8, "sides measured", t0)
        assert bar.rate == pytest.approx(2 / (time.perf_counter() - t0), rel=0.2)  # both sides count
        assert "2/8 sides measured" in bar.line()
        if isinstance(bar, _TerminalProgress):
            assert bar._bar.n == 2 and bar._bar.initial == 0
            assert bar._bar.start_t == pytest.approx(t0 + time.time() - time.perf_counter(), abs=0.05)


def test_an_interrupted_stage_says_how_far_it_got() -> None:
    import io

    from steper_ray.console import _LineProgress, _TerminalProgress

    out = io.StringIO()
    bar = _LineProgress("bench-index", out)
    bar.start(4, "sides measured")
    bar.update(3)
    bar.close("interrupted")
    assert out.getvalue().split("(")[0] == "bench-index     interrupted at 3/4 sides measured "
    term = io.StringIO()
    tbar = _TerminalProgress("bench-index", term)
    tbar.start(None, "questions {x}")  # braces in a unit are text, not tqdm fields
    tbar.update(7)
    tbar.close("interrupted")
    assert "interrupted at 7 questions {x} [" in term.getvalue().replace("\r", "\n").splitlines()[-1]
    fresh = io.StringIO()
    _LineProgress("train", fresh).close("failed")  # nothing done: no count
    assert fresh.getvalue().startswith("train           failed (")


def test_each_part_of_a_stage_keeps_its_own_last_line() -> None:
    import io

    from steper_ray.console import _LineProgress, _TerminalProgress

    out = io.StringIO()
    bar = _LineProgress("ablate", out)
    bar.relabel("steper: train")
    bar.start(34, "steps")
    bar.update(34)
    bar.relabel("steper: evaluate")  # training's final count is kept as a line
    bar.start(150, "questions")
    bar.update(150)
    bar.close("done")
    lines = out.getvalue().splitlines()
    assert [ln.split()[:3] for ln in lines] == [["steper:", "train", "34/34"], ["steper:", "evaluate", "150/150"]]

    term = io.StringIO()
    tbar = _TerminalProgress("ablate", term)
    tbar.relabel("uniform: train")
    tbar.start(3, "steps")
    tbar.update(3)
    tbar.relabel("uniform: evaluate")
    tbar.close("done")
    shown = term.getvalue().replace("\r", "\n")
    assert "uniform: train" in shown and "3/3 steps" in shown and "uniform: evaluate" in shown


def test_verbose_leaves_the_terminal_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(verbose=True)
    log_file = tmp_path / "logs/generate.log"

    def stage() -> None:
        print("python print to stdout")
        logging.getLogger("steper_ray.some_module").debug("a debug record")

    with console.session("generate", tmp_path / "logs/command.log"):
        run_stage(console, "generate", log_file, stage)
    out = capsys.readouterr().out
    assert "python print to stdout" in out and out.splitlines()[-1].startswith("generate")
    assert "a debug record" in log_file.read_text() and "python print" not in log_file.read_text()


def test_a_one_stage_command_logs_each_record_once(tmp_path: Path) -> None:
    # single-stage commands open the session and the stage on the same file
    console = Console()
    log_file = tmp_path / "logs/index.log"
    with console.session("index", log_file):
        run_stage(console, "index", log_file, lambda: logging.getLogger("steper_ray.x").info("built the index"))
    assert log_file.read_text().count("built the index") == 1


def test_a_log_handler_made_during_a_stage_still_works_after_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # what Ray Data does on first use: a StreamHandler on its own logger, holding sys.stderr as it is then
    library = logging.getLogger("some_library_made_in_a_stage")
    library.propagate = False

    def first_stage() -> None:
        library.addHandler(logging.StreamHandler())
        library.warning("from the first stage")

    console = Console()
    try:
        with console.session("pipeline", tmp_path / "logs/pipeline.log"):
            run_stage(console, "generate", tmp_path / "logs/generate.log", first_stage)
            run_stage(console, "evaluate", tmp_path / "logs/evaluate.log",
                      lambda: library.warning("from the second stage"))
    finally:
        handlers, library.handlers = library.handlers, []
    assert "from the first stage" in (tmp_path / "logs/generate.log").read_text()
    second = (tmp_path / "logs/evaluate.log").read_text()
    assert "from the second stage" in second and "Logging error" not in second
    assert not handlers[0].stream.closed


def test_the_tail_of_a_log_is_this_runs_only(tmp_path: Path) -> None:
    log_file = tmp_path / "generate.log"
    log_file.write_text("\n===== stage generate (yesterday) =====\nTraceback\nOldError: the last run's\n"
                        "\n===== stage generate (today) =====\nUserError: this run's\n")
    assert tail(log_file) == ["UserError: this run's"]

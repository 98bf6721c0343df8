"""The run report (steper_ray/report): what it shows of a run, what it does with a run that
stopped early or with markup in the data, the `report` command and the pipeline's report."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from steper_ray.cli import main
from steper_ray.report import gather_report, render_report, write_report
from steper_ray.report.gather import MAX_PASSAGE_CHARS, read_passages
from steper_ray.report.svg import bar_chart, line_chart


def _blob(page: str) -> dict[str, Any]:
    """The trace browser's data, parsed back from the page as the browser does."""
    match = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', page, re.DOTALL)
    assert match, "no trace data in the page"
    return json.loads(match.group(1))


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]


def _cells(html: str) -> list[list[str]]:
    """Each table body row's cells as text (tags dropped; header rows have none)."""
    rows = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", html)]
    return [row for row in rows if row]


def test_report_shows_stages_recall_drops_curves_and_metrics(report_run: dict[str, Any]) -> None:
    run: Path = report_run["run"]
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    assert not list(run.glob(".report.html*")), "the temporary file was left behind"

    assert _cells(_section(page, "stages")) == [
        ["index", "done", "1.5"], ["retrieval_eval", "done", "0.5"], ["generate", "done", "12.2"],
        ["evaluate_base", "done", "8.0"], ["train", "done", "40.0"], ["evaluate", "done", "8.0"],
        ["total", "", "70.2"]]
    assert _cells(_section(page, "retrieval")) == [["dv", "2", "0.750", "1.000"]]
    assert "indexes: <code>data.corpus=questions</code>" in _section(page, "retrieval")

    gen = _section(page, "generate")
    assert "<b>2</b> of <b>4</b> traces kept, <b>2</b> dropped" in gen
    cells = _cells(gen)
    assert ["toy", "2", "1"] in cells and ["other", "0", "1"] in cells  # kept, dropped by dataset
    assert ["wrong answer", "1"] in cells and ["error", "1"] in cells  # dropped by reason kind
    assert ["wrong answer (contains)", "1"] in cells  # and in full

    train = _section(page, "train")
    assert "Loss mode <b>steper</b>, 3 optimizer steps" in train
    assert train.count("<polyline") == 6  # sigma and loss curves, one per task each
    # step 2 was logged twice (a resume): the last record counts, not the first (loss 99)
    assert gather_report(run)["train"]["loss"]["init"] == [[1, 3.0], [2, 1.5], [3, 1.0]]

    assert _cells(_section(page, "evaluate"))[:2] == [
        ["student before training (zero-shot)", "dv", "2", "0.000", "0.000", "0.000", "0.500", "1.000", "2.00",
         "40.0", "0", "0"],
        ["student after training (steper)", "dv", "2", "0.500", "0.625", "0.500", "1.000", "1.000", "2.00",
         "40.0", "0", "0"]]
    assert "default-src 'none'" in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_trace_browser_data_marks_gold_passages_and_scores_answers(report_run: dict[str, Any]) -> None:
    run, p = report_run["run"], report_run["p"]
    data = _blob(render_report(gather_report(run)))
    assert [s["key"] for s in data["sources"]] == ["generate", "evaluate_base", "evaluate"]
    qs = {(data["sources"][q["src"]]["key"], q["id"]): q for q in data["questions"]}
    assert len(qs) == report_run["questions"]

    q1 = qs["generate", "q1"]
    assert q1["gold_ids"] == [p["founded"].id, p["born"].id]  # from the training set the run read
    assert [s["ids"] for s in q1["steps"]] == [[p["founded"].id, p["script"].id], [p["born"].id, p["river"].id],
                                              [p["born"].id]]
    assert q1["steps"][1]["out"] == "Marta Velde was born in Bergen, Norway." and q1["steps"][1]["tokens"] == 10
    assert (q1["kept"], q1["correct"], q1["answer"], q1["gold"]) == (True, True, "Norway", ["Norway"])
    assert (qs["generate", "q3"]["kept"], qs["generate", "q3"]["correct"]) == (False, False)
    assert qs["generate", "q3"]["reason"] == "wrong answer (contains)"
    assert qs["generate", "q4"]["gold_ids"] == []  # a question without paragraph annotation
    assert qs["evaluate", "d1"]["correct"] is True and qs["evaluate", "d2"]["correct"] is False
    assert qs["evaluate", "d1"]["kept"] is None and qs["evaluate", "d1"]["gold_ids"] == [p["born"].id]
    assert qs["evaluate_base", "d2"]["answer"] is None
    # each retrieved passage once, with its title and text (from the training or the dev index)
    assert data["passages"][p["born"].id] == [p["born"].title, p["born"].text]
    assert set(data["passages"]) == {v.id for v in p.values()}


def test_markup_in_the_data_is_text_not_html(report_run: dict[str, Any]) -> None:
    page = write_report(report_run["run"]).read_text()
    # the page's own two scripts only: the data blob and the browser code
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<img" not in page and "<b>Holm</b>" not in page
    # a drop reason with markup is escaped in the reason table
    assert "prompt has 5000 tokens &lt;img src=x onerror=&quot;window.__pwned = 3&quot;&gt;" in page
    # the blob reads back to the passage exactly as written
    data = _blob(page)
    assert data["passages"][report_run["p"]["script"].id][1] == report_run["script_text"]
    assert any(q["q"] == "Which river joins the Tessa near <b>Holm</b>?" for q in data["questions"])


def test_a_run_that_stopped_after_generate_says_what_did_not_run(report_run: dict[str, Any]) -> None:
    run: Path = report_run["run"]
    for stage in ("train", "evaluate", "evaluate_base", "retrieval_eval"):
        shutil.rmtree(run / stage)
    (run / "summary.json").unlink()  # the pipeline did not finish
    (run / "generate/summary.json").unlink()  # nor did generate: its traces so far still count
    page = write_report(run).read_text()
    assert _cells(_section(page, "stages")) == [
        ["index", "done", "1.5"], ["retrieval_eval", "not run", "–"], ["generate", "incomplete", "–"],
        ["train", "not run", "–"], ["evaluate", "not run", "–"], ["total", "", "1.5"]]
    for what in ("retrieval_eval", "train", "evaluate"):
        assert f'<p class="not-run">{what}: not run.</p>' in page
    assert "generate has not finished" in page and "<b>2</b> of <b>4</b> traces kept" in page
    assert [s["key"] for s in _blob(page)["sources"]] == ["generate"]


def test_a_moved_dataset_only_loses_the_gold_marks(report_run: dict[str, Any]) -> None:
    run: Path = report_run["run"]
    (run.parent / "data/train.jsonl").unlink()
    data = gather_report(run)["browser"]
    q1 = next(q for q in data["questions"] if q["id"] == "q1")
    assert q1["gold_ids"] is None and q1["steps"]  # unknown, not "no gold"
    assert any("training set toy" in n for n in data["notes"])


def test_the_browser_caps_each_source_and_passage_texts(report_run: dict[str, Any], tmp_path: Path) -> None:
    data = gather_report(report_run["run"], max_questions=1)["browser"]
    assert [s["shown"] for s in data["sources"]] == [1, 1, 1] and [s["total"] for s in data["sources"]] == [4, 2, 2]
    assert "teacher traces (generate): the first 1 of 4 questions are shown" in data["notes"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "title": ["A", "B"], "text": ["x" * 5000, "short"]}),
                   tmp_path / "passages.parquet")
    got = read_passages(tmp_path, {"a", "missing"})
    assert set(got) == {"a"} and len(got["a"][1]) == MAX_PASSAGE_CHARS + 2


def test_report_command_writes_the_page_and_prints_its_path(report_run: dict[str, Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(report_run["run"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>") and not (report_run["run"] / "report.html").exists()
    assert main(["report", str(report_run["run"])]) == 0
    assert capsys.readouterr().out.strip() == str(report_run["run"] / "report.html")


@pytest.mark.parametrize("make", ["missing", "empty", "other"])
def test_report_of_a_directory_that_is_not_a_run_exits_2_with_the_fix(
        make: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "d"
    if make != "missing":
        target.mkdir()
    if make == "other":
        (target / "notes.txt").write_text("x")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "steper-ray report runs/local" in err
    assert ("does not exist" if make == "missing" else "is not a run directory") in err
    assert not (target / "report.html").exists()


def test_an_unwritable_out_exits_2(report_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["report", str(report_run["run"]), "--out", str(tmp_path / "file" / "r.html")]) == 2
    assert "file is a file, so r.html cannot be written inside it" in capsys.readouterr().err
    for bad in (".", str(tmp_path)):
        assert main(["report", str(report_run["run"]), "--out", bad]) == 2
        err = capsys.readouterr().err
        assert "is not a file name" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exited:  # an empty --out is a mistake in the arguments
        main(["report", str(report_run["run"]), "--out", ""])
    assert exited.value.code == 2 and "--out is empty" in capsys.readouterr().err


def test_out_never_overwrites_a_file_that_is_not_a_report(
        report_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = report_run["run"]
    summary = (run / "summary.json").read_text()
    notes = tmp_path / "notes.md"
    notes.write_text("mine")
    for target in (run / "summary.json", notes):
        assert main(["report", str(run), "--out", str(target)]) == 2
        assert "is not a steper-ray report" in capsys.readouterr().err
    assert (run / "summary.json").read_text() == summary and notes.read_text() == "mine"
    page = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(page), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"command": "report", "report": str(page)}
    assert main(["report", str(run), "--out", str(page)]) == 0  # an earlier report is rebuilt in place


def test_run_dir_names_are_paths_not_yaml(report_run: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # "run #2" must not become "run" (a YAML comment), "010" not 8, "true" not a bool.
    for name in ("run #2", "010", "true", "a: b"):
        copy = tmp_path / name
        shutil.copytree(report_run["run"], copy)
        assert main(["report", str(copy)]) == 0, capsys.readouterr().err
        assert capsys.readouterr().out.strip() == str(copy / "report.html")
        assert (copy / "report.html").is_file()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["report", str(afile)]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(["report", str(report_run["run"]), "extra=1"])
    assert exited.value.code == 2 and "takes no key=value overrides" in capsys.readouterr().err


def test_damaged_files_are_named_on_the_page_not_fatal(report_run: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "damaged"
    shutil.copytree(report_run["run"], run)
    (run / "train" / "summary.json").write_text("{not json")
    with open(run / "train" / "metrics.jsonl", "a") as fh:  # a diverged step: json.dumps writes these
        fh.write('{"step": 99, "loss_init": Infinity, "sigma_init": NaN}\n')
    part = next((run / "generate" / "traces").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:200])
    with open(run / "evaluate" / "predictions" / "dv.jsonl", "a") as fh:
        fh.write('[1, 2, 3]\nnull\n{"question": "lone \\ud800 surrogate", "steps": [1]}\n')
    (run / "config.yaml").write_text("data: [unclosed\n")
    out = write_report(run)
    page = out.read_text(encoding="utf-8")
    report = gather_report(run)
    problems = report["problems"]
    assert any("train/summary.json cannot be read" in p for p in problems)
    assert any(part.name in p and "cannot be read" in p for p in problems)
    assert report["generate"] is None or report["generate"]["questions"] == 0
    assert all(math.isfinite(y) for curve in report["train"]["loss"].values() for _, y in curve)
    assert "nan" not in page.split('id="trace-data"')[0].lower().replace("nan-", "")
    assert "Files that could not be read" in page
    assert "does not load" in report["run"]["config_note"]
    assert "lone ? surrogate" in page  # the lone surrogate is replaced; the page is still written


def _pipeline_config(run: Path, tmp_path: Path) -> str:
    """The run's own config as a file (the pipeline rewrites run/config.yaml)."""
    cfg = tmp_path / "cfg.yaml"
    shutil.copy(run / "config.yaml", cfg)
    return str(cfg)


def test_pipeline_writes_the_report_and_ends_with_its_path(report_run: dict[str, Any], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run: Path = report_run["run"]
    # every stage has its summary: the pipeline skips them all and only writes its summary and the report
    assert main(["pipeline", "--config", _pipeline_config(run, tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"report: {run / 'report.html'}"
    assert json.loads((run / "summary.json").read_text())["report"] == str(run / "report.html")
    assert "student after training (steper)" in (run / "report.html").read_text()


def test_a_failed_report_costs_the_pipeline_nothing(report_run: dict[str, Any], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import steper_ray.report

    def broken(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(steper_ray.report, "write_report", broken)
    run: Path = report_run["run"]
    assert main(["pipeline", "--config", _pipeline_config(run, tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "report" in line]
    assert warnings == [(f"warning: the run report was not written (RuntimeError: disk on fire); rebuild it "
                         f"with `steper-ray report {run}`")]
    lines = captured.out.strip().splitlines()
    assert lines[-2] == "report: not written (see the warning above)"
    summary = json.loads(lines[-1])
    assert summary["report"] is None and [s["status"] for s in summary["stages"]] == ["skipped"] * 6
    assert json.loads((run / "summary.json").read_text())["stages"] == summary["stages"]
    assert "disk on fire" in (run / "logs/pipeline.log").read_text()


def test_charts_escape_labels_and_handle_no_data() -> None:
    chart = line_chart({"<init>": [[1, 1.0], [2, 0.5]], "agg": [[1, 2.0]]}, "a & b", "step")
    assert "&lt;init&gt;" in chart and "<init>" not in chart and "a &amp; b" in chart
    assert chart.count("<polyline") == 1 and chart.count("<circle") == 1  # one point: a dot
    assert "no data" in line_chart({"init": []}, "t", "step")
    assert "(log scale)" in line_chart({"x": [[1, 100.0], [2, 1.0]]}, "t", "s", log_y=True)
    assert "(log scale)" not in line_chart({"x": [[1, 2.0], [2, 1.0]]}, "t", "s", log_y=True)
    bars = bar_chart(["hp", "mu"], {"before": [0.5, None], "<after>": [1.0, 0.25]}, "Acc")
    assert bars.count("<rect") == 1 + 3 + 2  # the plot area, three bars, two legend keys
    assert "&lt;after&gt;" in bars
    # five long mode names (ablate) wrap onto further legend rows, all inside the chart
    names = [f"ablation: {m}" for m in ("steper", "uniform", "first_heavy", "last_heavy", "vanilla_kd")]
    legend = bar_chart(["hp"], {n: [0.5] for n in names}, "Acc")
    xs = [float(x) for x in re.findall(r'<text x="([0-9.]+)" y="[0-9.]+" class="legend"', legend)]
    rows = set(re.findall(r'<text x="[0-9.]+" y="([0-9.]+)" class="legend"', legend))
    assert len(xs) == 5 and len(rows) >= 2
    assert all(x + 7 * len(n) <= 520 for x, n in zip(xs, names))


def test_well_formed_json_of_the_wrong_shape_is_named_on_the_page_not_fatal(
        report_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "shapes"
    shutil.copytree(report_run["run"], run)
    (run / "summary.json").write_text('{"command": "pipeline", "stages": 5}')
    gen = json.loads((run / "generate" / "summary.json").read_text())
    (run / "generate" / "summary.json").write_text(json.dumps({**gen, "examples_per_task": 5}))
    (run / "evaluate" / "summary.json").write_text('{"command": "evaluate", "metrics": 5}')
    with open(run / "train" / "metrics.jsonl", "a") as fh:
        fh.write("{broken line\n[1, 2]\n")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    report = gather_report(run)
    problems = report["problems"]
    assert "the traces section: data of an unexpected shape" in (run / "report.html").read_text(encoding="utf-8")
    assert f"{run / 'evaluate' / 'summary.json'} has no per-dataset 'metrics' object" in " ".join(problems)
    assert any("2 line(s) are not a step's metrics" in p for p in problems)
    assert [r["key"] for r in report["evaluation"]] == ["evaluate_base"]  # the readable one still shows
    assert "Files that could not be read" in page and "Traceback" not in capsys.readouterr().err


def test_a_stage_directory_given_as_the_run_is_refused(report_run: dict[str, Any], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(report_run["run"] / "generate")]) == 2
    assert "holds the output of `steper-ray generate`, not a run directory" in capsys.readouterr().err
    assert not (report_run["run"] / "generate" / "report.html").exists()


def test_an_unexpected_failure_still_ends_json_output_with_the_failure_line(
        report_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*_: Any, **__: Any) -> Path:
        raise RuntimeError("a bug")

    monkeypatch.setattr("steper_ray.report.write_report", broken)
    with pytest.raises(RuntimeError):
        main(["report", str(report_run["run"]), "--json"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {"command": "report", "status": "failed", "exit_code": 1, "error": "RuntimeError: a bug"}

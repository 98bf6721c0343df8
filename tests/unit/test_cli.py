"""The `steper-ray` commands, called in-process the way the console script calls them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.cli import _parse, build_parser, main


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_index_then_retrieve_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ix = tmp_path / "ix"
    assert main(["index", "--dataset", "sample:musique/dev.jsonl", "--out", str(ix), "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["passages"] == 900 and summary["kind"] == "bm25" and summary["bad_records"] == 0
    assert json.loads((ix / "summary.json").read_text()) == summary

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"question": "capital of Mountrail County"}\n{"question": "Journal of Psychotherapy Integration publisher"}\n')
    assert main(["retrieve", "--index", str(ix), "-k", "3", "--queries", str(queries), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in lines] == ["capital of Mountrail County", "Journal of Psychotherapy Integration publisher"]
    assert all(len(x["hits"]) == 3 and set(x["hits"][0]) == {"id", "title", "score"} for x in lines)
    assert lines[0]["hits"][0]["title"] == "Mountrail County Courthouse"

    # the same corpus in two shards: same summary but for the shards, same hits
    assert main(["index", "--dataset", "sample:musique/dev.jsonl", "--shards", "2", "--out", str(tmp_path / "ix2"),
                 "--json"]) == 0
    sharded = _last_json(capsys.readouterr().out)
    assert sharded["shards"] == 2 and summary["shards"] == 1 and sharded["passages"] == 900
    assert main(["retrieve", "--index", str(tmp_path / "ix2"), "-k", "3", "--queries", str(queries), "--json"]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == lines

    plain = tmp_path / "q.txt"
    plain.write_text("Mountrail County\n\nPort Blair\n")
    assert main(["retrieve", "--index", str(ix), "--queries", str(plain), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and len(lines[1]["hits"]) == 4  # default retrieval.k

    # only stopwords: no passage matches, so no hits (not k passages scoring 0), said in words
    assert main(["retrieve", "--index", str(ix), "--query", "is it the"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "# is it the", "  no hits: no passage holds a word of the query (stopwords aside)"]


def test_index_corpus_and_format_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"title": "A", "text": "alpha beta"}\n{"title": "B", "text": "gamma"}\nbroken\n')
    assert main(["index", "--corpus", str(corpus), "--out", str(tmp_path / "c"), "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["passages"] == 2 and summary["bad_records"] == 1
    assert main(["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--format", "hotpotqa",
                 "--out", str(tmp_path / "h"), "index.bm25.backend=rank_bm25", "--json"]) == 0
    assert _last_json(capsys.readouterr().out)["backend"] == "rank_bm25"


def test_repeated_corpus_id_is_counted_not_indexed_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(x) for x in [
        {"id": "42", "title": "Falcon Ridge", "text": "Falcon Ridge is a ridge above the lake."},
        {"id": "42", "title": "Heron Bay", "text": "Heron Bay is a bay below the ridge."},
        {"id": "43", "title": "Falcon Ridge", "text": "Falcon Ridge is a ridge above the lake."},
    ]) + "\n")
    assert main(["index", "--corpus", str(corpus), "--out", str(tmp_path / "ix"), "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["passages"] == 2 and summary["bad_records"] == 1
    assert summary["bad_examples"][0]["line"] == 2 and summary["bad_examples"][0]["id"] == "42"
    assert summary["read"]["same_text_under_other_ids"] == 1
    assert main(["retrieve", "--index", str(tmp_path / "ix"), "-k", "5", "--query", "ridge bay", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert sorted((h["id"], h["title"]) for h in hits) == [("42", "Falcon Ridge"), ("43", "Falcon Ridge")]


def test_index_summary_carries_the_unspaced_script_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "zh.jsonl"
    corpus.write_text("".join(json.dumps({"title": t, "text": t * 8 + "是一个很长的没有空格的句子"},
                                         ensure_ascii=False) + "\n" for t in ("北京", "上海", "广州")),
                      encoding="utf-8")
    assert main(["index", "--corpus", str(corpus), "--out", str(tmp_path / "w"), "--json"]) == 0
    assert "index.bm25.tokenizer=char_ngram" in _last_json(capsys.readouterr().out)["warnings"][0]
    assert main(["index", "--corpus", str(corpus), "--out", str(tmp_path / "g"), "--json",
                 "index.bm25.tokenizer=char_ngram"]) == 0
    assert _last_json(capsys.readouterr().out)["warnings"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retrieve", "--index", "/nonexistent/ix", "--query", "x"], "no index at /nonexistent/ix"),
        (["index", "--dataset", "/nonexistent.jsonl", "--out", "x"], "does not exist"),
        (["index", "--dataset", "sample:2wikimultihopqa/malformed.jsonl", "--out", "x"], "no paragraphs to index"),
        (["index", "--out", "x"], "nothing to index"),
        (["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--kind", "sparse"], "index.kind"),
        (["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--shards", "2", "index.bm25.backend=rank_bm25"],
         "needs index.bm25.backend=bm25s"),
        (["index", "--corpus", "sample:musique/dev.jsonl", "--format", "musique", "--shards", "65"], "index.shards"),
        (["pipeline", "retrieval.k=0", "index.kindd=dense"], "2 problem(s)"),
        (["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", "."], "would hold or lie inside the run's log"),
        (["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", "runs/local/logs"], "run's log directory"),
        (["index", "--dataset", "sample:hotpotqa/dev.jsonl", "--out", ".", "run_dir=../elsewhere-run"],
         "is the current directory or holds it"),
        (["index", "--corpus", "sample:hotpotqa/dev.jsonl"], "a dataset file is indexed with --dataset"),
    ],
)
def test_user_errors_exit_2_with_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_json_failure_is_the_last_line_of_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.tsv"
    assert main(["index", "--corpus", str(missing), "--out", str(tmp_path / "ix"), "--json"]) == 2
    captured = capsys.readouterr()
    failure = _last_json(captured.out)
    assert failure == {"command": "index", "status": "failed", "exit_code": 2,
                       "error": f"corpus file {missing} does not exist; check the path"}
    assert failure["error"] in captured.err  # the terminal message is the same, once
    assert main(["retrieve", "--index", str(tmp_path / "none"), "--query", "x", "--json"]) == 2
    assert _last_json(capsys.readouterr().out)["error"].startswith(f"no index at {tmp_path / 'none'}")
    # a mistake in the arguments themselves: argparse's usage on stderr, exit 2, and the same line
    with pytest.raises(SystemExit) as exited:
        main(["retrieve", "--index", str(tmp_path), "--query", "x", "-k", "abc", "--json"])
    captured = capsys.readouterr()
    assert exited.value.code == 2 and "usage: steper-ray retrieve" in captured.err
    assert _last_json(captured.out) == {"command": "retrieve", "status": "failed", "exit_code": 2,
                                        "error": "argument -k: invalid int value: 'abc'"}
    # an option before the command: where it goes, and the command named in the line
    with pytest.raises(SystemExit):
        main(["-v", "--out", "", "index", "--json"])  # after -v too
    assert "--out goes after the command, e.g. `steper-ray index --out `" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "--out", " ", "--json"])
    assert _last_json(capsys.readouterr().out)["error"].startswith("--out is empty")
    with pytest.raises(SystemExit):
        main(["--config", "x.yaml", "ablate", "--json"])
    assert _last_json(capsys.readouterr().out) == {
        "command": "ablate", "status": "failed", "exit_code": 2,
        "error": "--config goes after the command, e.g. `steper-ray ablate --config x.yaml` (only "
                 "-v/--verbose comes before it)"}
    # -v/--verbose after the command is taken as before it
    for argv in (["pipeline", "--verbose", "run_dir=x"], ["-v", "pipeline", "run_dir=x"], ["pipeline", "run_dir=x", "-v"]):
        args = _parse(build_parser(), argv)
        assert (args.verbose, args.command, args.overrides) == (True, "pipeline", ["run_dir=x"])
    assert _parse(build_parser(), ["pipeline"]).verbose is False
    # modes listed as separate words, not one comma-separated --modes value
    for argv in (["ablate", "steper", "uniform"], ["ablate", "--modes", "steper,", "uniform"]):
        with pytest.raises(SystemExit):
            main([*argv, "--json"])
        assert _last_json(capsys.readouterr().out)["error"] == (
            "modes are one comma-separated --modes value: --modes steper,uniform")


def test_index_says_what_it_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"title": "A", "text": "alpha"}\n{"title": "B", "text": 7}\n')
    assert main(["index", "--corpus", str(corpus), "--out", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("indexed 1 passages (bm25) into ")
    assert out[-1] == f"  1 bad entries skipped (reasons and examples in {tmp_path / 'ix'}/summary.json)"


def test_an_error_after_ctrl_c_is_reported_as_the_interruption(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    from steper_ray import cli

    def stopped_inside_a_lock(args: object, console: object) -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("release unlocked lock") from None  # as Ray Data's executor may
        return 0

    monkeypatch.setattr(cli, "_dispatch", stopped_inside_a_lock)
    before = signal.getsignal(signal.SIGINT)  # Python's, or one a library (Ray Train) installed earlier
    assert main(["index", "--dataset", "sample:hotpotqa/dev.jsonl"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "steper-ray index: interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # put back

    def plain_failure(args: object, console: object) -> int:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(cli, "_dispatch", plain_failure)
    with pytest.raises(RuntimeError, match="a real bug"):
        main(["index", "--dataset", "sample:hotpotqa/dev.jsonl"])


_SWALLOWING = """
import os, signal, sys, threading, time
from steper_ray import cli

cli.INTERRUPT_GRACE_S = 1.0

def swallows(args, console):  # a library that eats Ctrl-C and goes on, or hangs in its cleanup
    for _ in range(int(sys.argv[1])):
        threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT)).start()  # 0.7 s apart: two Ctrl-Cs
        try:
            time.sleep(1.5)
        except KeyboardInterrupt:
            pass
    time.sleep(60)
    return 0

cli._dispatch = swallows
sys.exit(cli.main(["index", "--dataset", "sample:hotpotqa/dev.jsonl"]))
"""


@pytest.mark.parametrize(("signals", "why"), [(1, "cleanup took over 1 s"), (2, "Ctrl-C twice")])
def test_a_swallowed_or_repeated_ctrl_c_still_stops_the_command(signals: int, why: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SWALLOWING, str(signals)], capture_output=True, text=True,
                          timeout=50)
    assert done.returncode == 130
    assert done.stderr.strip().splitlines()[-1] == f"steper-ray index: interrupted ({why}; stopped)"


def test_retrieve_bad_k_and_empty_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ix = tmp_path / "ix"
    main(["index", "--dataset", "sample:2wikimultihopqa/dev.jsonl", "--out", str(ix)])
    capsys.readouterr()
    assert main(["retrieve", "--index", str(ix), "-k", "0", "--query", "x"]) == 2
    assert "-k must be at least 1" in capsys.readouterr().err
    assert main(["retrieve", "--index", str(ix), "--query", "  "]) == 2
    assert "--query is empty" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_session")
def test_pipeline_runs_and_resumes_by_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # a relative run_dir, as the embedded default's runs/local: Ray Train workers run in another
    # working directory, so every path they get must be made absolute first
    monkeypatch.chdir(tmp_path)
    run = Path("run")
    overrides = [f"run_dir={run}", "data.dev=[{name: hp, path: 'sample:hotpotqa/dev.jsonl', limit: 20},"
                 " {name: mu, path: 'sample:musique/dev.jsonl', limit: 20}]", "generate.limit=5",
                 "train.max_steps=2", "train.checkpoint_every=2", "evaluate.limit=3"]
    assert main(["pipeline", "--json", *overrides]) == 0
    out = capsys.readouterr().out
    summary = _last_json(out)
    assert [s["stage"] for s in summary["stages"]] == ["index", "retrieval_eval", "generate", "train", "evaluate"]
    assert [s["status"] for s in summary["stages"]] == ["done"] * 5
    assert summary["train"]["steps"] == 2 and (run / "train/model/model.safetensors").is_file()
    assert summary["generate"]["kept"] == 10 and summary["generate"]["examples_per_task"]["init"] == 10
    assert set(summary["retrieval"]) == {"hp", "mu"}
    for m in summary["retrieval"].values():
        assert m["questions"] == 20
        assert 0 < m["recall@2"] <= m["recall@4"] <= m["recall@8"] <= m["recall@10"] <= 1
    assert (run / "index/hp/manifest.json").is_file()
    assert len((run / "retrieval_eval/mu.jsonl").read_text().splitlines()) == 20
    assert (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    # the trained student answered 3 questions of each dev set, through its own indexes
    assert {n: m["questions"] for n, m in summary["evaluate"]["metrics"].items()} == {"hp": 3, "mu": 3}
    assert len((run / "evaluate/predictions/mu.jsonl").read_text().splitlines()) == 3
    assert Path(summary["evaluate"]["plot"]).stat().st_size > 10_000
    assert "| run (steper) | hp | 3 |" in Path(summary["evaluate"]["report"]).read_text()
    table = out.strip().rsplit("\n", 1)[0]  # everything before the JSON line
    assert "final sigmas init" in table and "dev set" in table and "\nhp " in table
    assert table.splitlines()[-1] == f"report: {run / 'report.html'}" and summary["report"] == str(run / "report.html")
    assert "student after training (steper)" in (run / "report.html").read_text()
    # the quiet console: a header, progress lines of the stages (one at the end of each, one a
    # minute while one runs), the table, the JSON; everything else is in one log per stage
    lines = out.splitlines()
    assert lines[0] == f"steper-ray pipeline: run {run}, logs in {run / 'logs'}/"
    head = lines[1:lines.index("stage            status    seconds")]
    stages = ["index", "retrieval_eval", "generate", "train", "evaluate"]
    first_words = [line.split()[0] for line in head]
    assert sorted(set(first_words), key=first_words.index) == stages and len(head) <= 15, head
    assert len(lines) <= 40, lines
    for stage in stages:
        assert f"===== stage {stage}" in (run / f"logs/{stage}.log").read_text()
    assert "stage generate" not in (run / "logs/train.log").read_text()

    assert main(["pipeline", "--json", *overrides]) == 0
    again = _last_json(capsys.readouterr().out)
    assert [s["status"] for s in again["stages"]] == ["skipped"] * 5
    assert again["retrieval"] == summary["retrieval"]


def test_tiny_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny"
    assert main(["tiny-model", "--out", str(out), "--dataset", "sample:musique/dev.jsonl",
                 "tiny_model.vocab_size=512", "tiny_model.num_layers=1", "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["config"]["vocab_size"] == 512 and summary["tokenizer_texts"] > 50
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["vocab_size"] == 512
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

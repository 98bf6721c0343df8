"""`steper-ray` console script: parse arguments, load the config, call a command function.

Every command accepts ``--config FILE`` and trailing ``key=value`` overrides (dotted paths into
the config, e.g. ``index.bm25.k1=1.2``) and, with ``--json``, prints its summary as the last
line of stdout. Mistakes a user can fix exit with code 2 and a message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from steper_ray.config import ABLATION_MODES, SteperConfig, load_config
from steper_ray.console import LOG_FORMAT, Console, StageFailed, run_stage
from steper_ray.errors import ResumableInterrupt, UserError
from steper_ray.layout import RunLayout

log = logging.getLogger("steper_ray")

DEFAULT_CONFIG_HELP = "YAML config (default: built-in defaults = the embedded local run)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=DEFAULT_CONFIG_HELP)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line (on failure: "
                   '{"command", "status": "failed", "exit_code", "error"})')
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _failure_line(command: str | None, code: int, error: str) -> str:
    """What --json prints as stdout's last line when a command fails (README, Commands)."""
    return json.dumps({"command": command, "status": "failed", "exit_code": code, "error": error})


class ArgumentMistake(SystemExit):
    """argparse's exit 2 for a mistake in the arguments, with its message kept for --json."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)  # what argparse prints, then the exit it makes
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise ArgumentMistake(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="steper-ray", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="everything on the terminal: Ray's logs, workers' output, debug logging "
                        "(default: one progress line per stage, the rest in <run_dir>/logs/)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="run every stage end to end (no arguments: embedded default)")
    p.add_argument("--serve", action="store_true",
                   help="then serve the trained student over HTTP (section serve) until Ctrl-C")
    _common(p)

    p = sub.add_parser("generate", help="teacher traces and step-wise examples (Ray Data)")
    p.add_argument("--out", help="output directory (default <run_dir>/generate)")
    _common(p)

    p = sub.add_parser("train", help="fine-tune the student (Ray Train + DeepSpeed ZeRO)")
    p.add_argument("--out", help="output directory (default <run_dir>/train)")
    _common(p)

    p = sub.add_parser("evaluate", help="a model answers the dev sets (Ray Data); or compare runs")
    p.add_argument("--out", help="output directory (default <run_dir>/evaluate; with --compare "
                   "<run_dir>/compare)")
    p.add_argument("--compare", nargs="+", action="extend", metavar="RUN_DIR",
                   help="write a comparison report (Markdown + PNG) of these evaluated runs instead")
    _common(p)

    p = sub.add_parser("ablate", help="the paper's loss ablations: train and evaluate each mode, one table")
    p.add_argument("--modes", help=f"comma-separated modes (default ablate.modes: {','.join(ABLATION_MODES)})")
    p.add_argument("--out", help="output directory (default <run_dir>/ablate)")
    _common(p)

    p = sub.add_parser("serve", help="the HTTP endpoint on Ray Serve (runs until Ctrl-C)")
    p.add_argument("--host", help="bind address (default serve.host)")
    p.add_argument("--port", type=int, help="HTTP port (default serve.port)")
    _common(p)

    p = sub.add_parser("index", help="build a BM25 or dense index")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="dataset file whose paragraphs form the corpus (or sample:<file>)")
    src.add_argument("--corpus", help="corpus file: JSON Lines or a JSON list of {id?, title, text}, a JSON dict "
                     "title -> sentences, or a TSV with an id, title, text header (any of them gzipped)")
    p.add_argument("--format", help="dataset format (default auto): hotpotqa, 2wikimultihopqa, musique, jsonl")
    p.add_argument("--kind", help="bm25 (default) or dense")
    p.add_argument("--shards", type=int, help="split the index into N shards by passage id (default "
                   "index.shards, 1); served as one retriever replica group per shard")
    p.add_argument("--out", help="index directory: new, empty or an index to rebuild (default: "
                   "<run_dir>/index/<source name>, beside the stage indexes)")
    _common(p)

    p = sub.add_parser("retrieve", help="query a saved index")
    p.add_argument("--index", required=True, help="index directory")
    p.add_argument("-k", type=int, default=None, help="hits per query (default retrieval.k)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", help="one query")
    q.add_argument("--queries", help="JSON Lines with a 'question' field, or one query per line")
    p.add_argument("--config", help=DEFAULT_CONFIG_HELP)
    p.add_argument("--json", action="store_true", help='one {"query", "hits"} object per line')
    p.add_argument("overrides", nargs="*", metavar="key=value")

    p = sub.add_parser("report", help="(re)build the run report: one self-contained HTML page of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (a pipeline's run_dir)")
    p.add_argument("--out", help="the HTML file to write (default <RUN_DIR>/report.html); an existing "
                   "file there must be an earlier report")
    p.add_argument("--json", action="store_true", help='also print {"command", "report"} as the last line')

    p = sub.add_parser("config-reference", help="print the configuration reference (Markdown table)")
    p.add_argument("--write", metavar="README", nargs="?", const="README.md",
                   help="replace the generated block in this README instead (default README.md)")

    p = sub.add_parser("tiny-model", help="build an offline tiny Llama and its tokenizer")
    p.add_argument("--out", required=True, help="output directory (Hugging Face format)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="train the tokenizer on this dataset's text (default: bundled samples)")
    src.add_argument("--corpus", help="train the tokenizer on this corpus file")
    _common(p)

    p = sub.add_parser("model", help="prepare a real pretrained model offline (GGUF -> Hugging Face directory)")
    msub = p.add_subparsers(dest="model_command", required=True)
    mp = msub.add_parser("prepare", help="build the model directory once (a second call reuses it)")
    mp.add_argument("name", nargs="?", help="a known model: smollm2 (SmolLM2-135M-Instruct)")
    mp.add_argument("--gguf", help="a local GGUF file of a supported architecture (with --out)")
    mp.add_argument("--out", help="output directory (default for a known name: ~/.cache/steper-ray/models/NAME)")
    mp.add_argument("--json", action="store_true", help="print the manifest as JSON on the last line")

    p = sub.add_parser("bench", help="benchmarks that print JSON")
    p.add_argument("which", choices=["retrieval", "index", "generation", "training", "serving"], help="which benchmark")
    p.add_argument("--passages", type=int, help="retrieval: also measure every engine at N passages (the "
                   "`scale` object; bench.retrieval.scale_passages)")
    p.add_argument("--data-dir", help="retrieval, index: directory with hotpotqa/, musique/, 2wikimultihopqa/ "
                   "dev files (default: the bundled samples)")
    p.add_argument("--out", help="where to write summary.json (default <run_dir>/bench/<which>, e.g. runs/local/bench/index)")
    p.add_argument("--model", help="generation / serving: the model (a directory or smollm2; default: the tiny Llama)")
    _common(p)
    return parser


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """Command-line flags are sugar for config overrides, so a flag and a key=value agree."""
    mapping = {
        "generate": {"out": "generate.out"},
        "train": {"out": "train.out"},
        "evaluate": {"out": "evaluate.out"},
        "ablate": {"out": "ablate.out"},
        "serve": {"host": "serve.host", "port": "serve.port"},
        "index": {"dataset": "index.dataset", "corpus": "index.corpus", "format": "index.format",
                  "kind": "index.kind", "shards": "index.shards", "out": "index.out"},
    }.get(args.command, {})
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    if args.command == "bench" and getattr(args, "passages", None) is not None:
        if args.which != "retrieval":
            raise UserError(f"--passages applies to bench retrieval, not {args.which}")
        out.append(f"bench.retrieval.scale_passages={args.passages}")
    if args.command == "bench" and getattr(args, "data_dir", None) and args.which not in ("retrieval", "index"):
        raise UserError(f"--data-dir applies to bench retrieval and index, not {args.which}")
    if args.command == "bench" and getattr(args, "model", None) is not None:
        if args.which not in ("generation", "serving"):
            raise UserError(f"--model applies to bench generation and serving, not {args.which}")
        out.append(f"bench.{args.which}.model={json.dumps(args.model)}")
    if args.command == "ablate" and args.modes is not None:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        out.append(f"ablate.modes={json.dumps(modes)}")
    if args.command == "index" and (args.dataset or args.corpus):
        # A source flag replaces whatever source the config file named.
        other = "index.corpus" if args.dataset else "index.dataset"
        out.append(f"{other}=null")
    return out


def _emit(console: Console, summary: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """The command's last output: its text, then (``--json``) the summary as the last line."""
    if text:
        console.print(text)
    if as_json:
        console.print(json.dumps(summary, default=str))


def _index_text(summary: dict[str, Any]) -> str:
    """What `steper-ray index` did, for a person: passages, bad entries, resumed or restarted parts."""
    lines = [f"indexed {summary['passages']} passages ({summary['kind']}) into {summary['out']}"]
    if summary.get("bad_records"):
        lines.append(f"  {summary['bad_records']} bad entries skipped (reasons and examples in "
                     f"{summary['out']}/summary.json)")
    if summary.get("started_over"):
        lines.append(f"  {summary['started_over']}")
    if summary.get("parts_resumed"):
        lines.append(f"  resumed: {summary['parts_resumed']} of {summary['parts']} parts were done by an earlier run")
    return "\n".join(lines)


def _staged(console: Console, cfg: SteperConfig, name: str, fn: Any, *args: Any) -> Any:
    """A command that is one stage: ``fn(*args)`` with its progress line and its log
    (``<run_dir>/logs/<name>.log``); Ray, when this command started it, stops inside."""
    from steper_ray.ray_session import shutdown_if_started

    log_file = RunLayout(cfg).log_file(name)
    with console.session(name, log_file):
        try:
            result = run_stage(console, name, log_file, fn, *args)
        finally:
            # inside the session, also after a failure or Ctrl-C: Ray's forwarded worker output
            # goes to the log, not after the summary or the error
            try:
                shutdown_if_started()
            except KeyboardInterrupt:  # the stage's result stands: its output is already written
                log.warning("Ctrl-C while Ray shut down, after stage %s ended", name)
    return result


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "report":
        from steper_ray.report import write_report

        path = write_report(args.run_dir, args.out)
        _emit(console, {"command": "report", "report": str(path)}, args.json, str(path))
        return 0
    if args.command == "config-reference":
        from steper_ray.commands.config_reference import render_reference, update_readme

        if args.write:
            changed = update_readme(Path(args.write))
            console.print(f"{args.write}: configuration reference {'updated' if changed else 'already up to date'}")
        else:
            console.print(render_reference())
        return 0
    if args.command == "model":
        from steper_ray.models.prepare import prepare_gguf, prepare_known

        if args.gguf and args.name:
            raise UserError("pass a known model name or --gguf FILE --out DIR, not both")
        if args.gguf:
            if not args.out:
                raise UserError("--gguf needs --out DIR (where the Hugging Face directory goes)")
            summary = prepare_gguf(args.gguf, args.out)
        elif args.name:
            summary = prepare_known(args.name, args.out)
        else:
            raise UserError("name a model (smollm2) or pass --gguf FILE --out DIR")
        _emit(console, summary, args.json, None if args.json else summary["out"])
        return 0
    cfg: SteperConfig = load_config(args.config, [*args.overrides, *_flag_overrides(args)])

    if args.command == "pipeline":
        from steper_ray.commands.pipeline import format_table, run_pipeline
        from steper_ray.ray_session import shutdown_if_started

        layout = RunLayout(cfg)
        console.print(f"steper-ray pipeline: run {layout.run_dir}, logs in {layout.logs}/")
        with console.session("pipeline", layout.log_file("pipeline")):
            summary = run_pipeline(cfg, console)
            if args.serve:
                from steper_ray.serve.app import run_serve

                console.print(format_table(summary))
                summary["serve"] = run_serve(cfg, announce=console.print)
            shutdown_if_started()
        _emit(console, summary, args.json, None if args.serve else format_table(summary))
    elif args.command == "generate":
        from steper_ray.generate.job import run_generate

        summary = _staged(console, cfg, "generate", run_generate, cfg)
        _emit(console, summary, args.json, None if args.json else json.dumps(summary, indent=2))
    elif args.command == "train":
        from steper_ray.train.trainer import run_train

        summary = _staged(console, cfg, "train", run_train, cfg)
        _emit(console, summary, args.json, None if args.json else json.dumps(summary, indent=2))
    elif args.command == "evaluate" and args.compare is not None:
        from steper_ray.evaluate.report import compare_runs

        layout = RunLayout(cfg)
        summary = compare_runs(args.compare, Path(args.out) if args.out else layout.compare, layout.logs)
        _emit(console, summary, args.json, None if args.json else
              Path(summary["report"]).read_text() + f"\nreport {summary['report']}, chart {summary['plot']}")
    elif args.command == "evaluate":
        from steper_ray.evaluate.job import run_evaluate

        summary = _staged(console, cfg, "evaluate", run_evaluate, cfg)
        _emit(console, summary, args.json, None if args.json else json.dumps(summary, indent=2))
    elif args.command == "ablate":
        from steper_ray.commands.ablate import run_ablate

        summary = _staged(console, cfg, "ablate", run_ablate, cfg)
        _emit(console, summary, args.json, None if args.json else
              Path(summary["report"]).read_text() + f"\nreport {summary['report']}, chart {summary['plot']}, "
              f"summary {Path(summary['out']) / 'summary.json'}")
    elif args.command == "serve":
        from steper_ray.serve.app import run_serve

        log_file = RunLayout(cfg).log_file("serve")
        console.print(f"steper-ray serve: logs in {log_file}")
        with console.session("serve", log_file):
            summary = run_serve(cfg, announce=console.print)
        _emit(console, summary, args.json)
    elif args.command == "index":
        from steper_ray.commands.index import run_index
        from steper_ray.retrieval.store import check_index_target

        layout = RunLayout(cfg)
        out, logs = layout.command_index.resolve(), layout.logs.resolve()
        where = (f"would hold or lie inside the run's log directory {layout.logs}"
                 if out.is_relative_to(logs) or logs.is_relative_to(out)
                 else "is the current directory or holds it" if Path.cwd().resolve().is_relative_to(out) else None)
        if where:
            raise UserError(f"--out {cfg.index.out} {where}: the index is swapped in as a whole directory; "
                            "give it a directory of its own, e.g. --out my_index")
        check_index_target(layout.command_index)  # before the log: a refused build writes nothing
        summary = _staged(console, cfg, "index", run_index, cfg)
        _emit(console, summary, args.json, None if args.json else _index_text(summary))
    elif args.command == "retrieve":
        from steper_ray.commands.retrieve import read_queries, run_retrieve

        k = args.k if args.k is not None else cfg.retrieval.k
        if k < 1:
            raise UserError(f"-k must be at least 1, got {k}")
        queries = [args.query] if args.query is not None else read_queries(args.queries)
        if args.query is not None and not args.query.strip():
            raise UserError("--query is empty; pass the text to search for")
        for query, hits in run_retrieve(args.index, queries, k):
            if args.json:
                console.print(json.dumps({"query": query, "hits": [
                    {"id": h.id, "title": h.title, "score": round(h.score, 6)} for h in hits]}))
            else:
                console.print(f"# {query}")
                if not hits:
                    console.print("  no hits: no passage holds a word of the query (stopwords aside)")
                for rank, h in enumerate(hits, 1):
                    console.print(f"{rank:>3}. {h.score:8.3f}  {h.title}  [{h.id}]")
    elif args.command == "tiny-model":
        from steper_ray.commands.tiny_model import run_tiny_model

        summary = _staged(console, cfg, "tiny-model", run_tiny_model, cfg, args.out, args.dataset, args.corpus)
        _emit(console, summary, args.json, None if args.json else f"tiny model saved to {summary['out']}")
    elif args.command == "bench":
        from steper_ray.bench.out_dir import bench_out_dir
        from steper_ray.models.prepare import KNOWN_MODELS, check_model_dir

        layout = RunLayout(cfg)
        out = Path(args.out) if args.out else layout.bench(args.which)
        model = getattr(getattr(cfg.bench, args.which), "model", None)
        if model is not None and model not in KNOWN_MODELS:  # a bad model creates no output dir either
            check_model_dir(model, f"bench.{args.which}.model (--model)")
        if args.which in ("retrieval", "index"):  # a wrong --data-dir creates no output dir either
            from steper_ray.bench.retrieval import find_dev_files

            find_dev_files(args.data_dir)
        bench_out_dir(out, args.which, layout.logs)  # before its log: a refusal writes nothing
        name = f"bench-{args.which}"
        if args.which == "retrieval":
            from steper_ray.bench.retrieval import run_retrieval_bench

            summary = _staged(console, cfg, name, lambda: run_retrieval_bench(cfg, data_dir=args.data_dir, out=out))
        elif args.which == "index":
            from steper_ray.bench.index_build import run_index_bench

            summary = _staged(console, cfg, name, run_index_bench, cfg, out, args.data_dir)
        elif args.which == "serving":
            from steper_ray.bench.serving import run_serving_bench

            summary = _staged(console, cfg, name, run_serving_bench, cfg, out)
        elif args.which == "training":
            from steper_ray.bench.training import run_training_bench

            summary = _staged(console, cfg, name, run_training_bench, cfg, out, cfg.bench.training.steps)
        else:
            from steper_ray.bench.generation import run_generation_bench

            g = cfg.bench.generation
            summary = _staged(console, cfg, name, run_generation_bench, cfg, out, g.model, g.num_questions,
                              g.batch_size, g.max_tokens)
        _emit(console, summary, args.json, None if args.json else json.dumps(summary, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(parser, given)
    except ArgumentMistake as mistake:
        if any(a == "--json" or a.startswith("--json=") for a in given):  # the line a script reads, as for every failure
            command = next((a for a in given if a in _commands(parser)), None)
            print(_failure_line(command, 2, mistake.message))
        raise
    # Quiet (default): log records go to the command's and each stage's log file; the terminal
    # shows warnings of commands without a log. --verbose: everything on the terminal.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)
        for noisy in ("sentence_transformers", "httpx", "faiss"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # our own progress line replaces Ray Data's progress bars (read when Ray Data is imported)
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    console = Console(verbose=args.verbose)
    interrupted = threading.Event()

    def say(text: str) -> None:
        console.print(f"steper-ray {args.command}: {text}", err=True)

    def failed(code: int, error: str) -> int:
        """Exit code ``code``; with --json, also the failure as the last line of stdout, where a
        script reads the summary of a command that succeeds."""
        if getattr(args, "json", False):  # named as the summary of a success names the command
            command = ("evaluate --compare" if getattr(args, "compare", None)
                       else f"bench {args.which}" if args.command == "bench" else args.command)
            console.print(_failure_line(command, code, error))
        return code

    def stopped_by_ctrl_c(exc: BaseException | None = None) -> int:
        # work a rerun resumes says where it is kept
        say("interrupted" + (f"; {exc}" if isinstance(exc, ResumableInterrupt) and str(exc) else ""))
        return failed(130, "interrupted")

    try:
        with _noting_interrupts(interrupted, say):
            return _dispatch(args, console)
    except StageFailed as stage_failed:
        cause = stage_failed.__cause__
        if interrupted.is_set():  # a library's cleanup failing after Ctrl-C is still the Ctrl-C
            return stopped_by_ctrl_c()
        if isinstance(cause, UserError):
            say(f"error: {cause}")
            return failed(2, str(cause))
        error = f"{type(cause).__name__}: {cause} (traceback in {stage_failed})"
        say(error)
        return failed(1, error)
    except UserError as exc:
        say(f"error: {exc}")
        return failed(2, str(exc))
    except KeyboardInterrupt as exc:
        return stopped_by_ctrl_c(exc)
    except Exception as exc:
        if interrupted.is_set():
            return stopped_by_ctrl_c()
        failed(1, f"{type(exc).__name__}: {exc}")  # --json: the failure line, then Python's traceback (exit 1)
        raise


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    """The command names ``parser`` knows (its subparsers' choices)."""
    return {name for action in parser._subparsers._group_actions for name in action.choices} if parser._subparsers else set()


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The parsed command line. Raises ArgumentMistake (exit 2) for a mistake in it."""
    # key=value overrides may come anywhere, also after options that follow a positional
    # (argparse would otherwise reject them), so collect the leftovers here.
    # `steper-ray --config x.yaml ablate` reads x.yaml as the command: say where options go
    at = next((i for i, a in enumerate(argv) if a in _commands(parser)), len(argv))
    # `steper-ray pipeline --verbose` means what `steper-ray --verbose pipeline` does (no command has its own -v)
    late = [a for a in argv[at + 1:] if a in ("-v", "--verbose")]
    argv = [*late, *argv[:at + 1], *(a for a in argv[at + 1:] if a not in ("-v", "--verbose"))]
    at += len(late)
    early = [a for a in argv[:at] if a not in ("-v", "--verbose")]
    if early and early[0].startswith("-") and not {"-h", "--help"} & set(early):
        command = argv[at] if at < len(argv) else "COMMAND"
        parser.error(f"{early[0].split('=', 1)[0]} goes after the command, e.g. `steper-ray {command} "
                     f"{' '.join(early)}` (only -v/--verbose comes before it)")
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]
    elif extra:  # a command without a config (report, config-reference) takes no key=value
        parser.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
    if args.command == "ablate":  # `ablate steper uniform` or `--modes steper uniform`
        named = [x for x in args.overrides if x.strip().rstrip(",") in ABLATION_MODES]
        if named:
            given = [m.strip() for m in (args.modes or "").split(",")] + [x.strip().rstrip(",") for x in named]
            listed = ",".join(m for m in given if m)
            parser.error(f"modes are one comma-separated --modes value: --modes {listed}")
    out = getattr(args, "out", None)
    if out is not None and not out.strip():
        parser.error("--out is empty; give a path, or leave --out out for the default")
    if getattr(args, "compare", None):  # nargs="+" also swallows trailing key=value overrides
        args.overrides += [x for x in args.compare if "=" in x]
        args.compare = [x for x in args.compare if "=" not in x]
    return args


INTERRUPT_GRACE_S = 30.0  # after Ctrl-C, how long a library's cleanup may take before the command stops anyway
SAME_INTERRUPT_S = 0.5  # a second SIGINT sooner than this is the first one delivered again, not a second Ctrl-C


@contextmanager
def _noting_interrupts(interrupted: threading.Event, say: Callable[[str], None]) -> Iterator[None]:
    """Set ``interrupted`` on Ctrl-C, then raise KeyboardInterrupt as Python does: the
    exception may surface as another one (Ray Data's executor, stopped inside a lock, raises
    RuntimeError), and the command still reports an interruption, exit 130. A library that
    swallows the KeyboardInterrupt or hangs in its cleanup cannot keep the command running: a
    second Ctrl-C, or ``INTERRUPT_GRACE_S`` seconds after the first, ends the process (exit
    130; every file the product writes is renamed into place whole, so none is left half-written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(why: str) -> None:
        say(f"interrupted ({why}; stopped)")
        os._exit(130)

    timer = threading.Timer(INTERRUPT_GRACE_S, stop, args=(f"cleanup took over {INTERRUPT_GRACE_S:g} s",))
    timer.daemon = True

    first: list[float] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if first:
            if time.monotonic() - first[0] < SAME_INTERRUPT_S:
                return  # the same interrupt delivered twice (`timeout -s INT` signals the process and its group)
            stop("Ctrl-C twice")
        first.append(time.monotonic())
        interrupted.set()
        timer.start()
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        timer.cancel()
        if previous is not None:  # None: a handler installed from C, which Python cannot restore
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())

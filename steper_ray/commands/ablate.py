"""`steper-ray ablate`: the paper's loss ablations in one command.

Every mode in ``ablate.modes`` trains a student from the same kept teacher traces (the run's step
examples; the generate stage runs first, as in the pipeline, when there are none yet) and is
evaluated on the same dev sets, through the ``train`` and ``evaluate`` commands themselves with a
config copy per mode: mode M trains into <out>/M/train (its own Ray Train run name, so an
interrupted mode resumes from its checkpoint) and its exported student is evaluated into
<out>/M/evaluate. A mode with an evaluate summary.json is skipped on rerun (status ``skipped``);
a trained one that was not evaluated is only evaluated (``evaluated``); the others train and
evaluate (``done``). Modes not asked for that an earlier run evaluated into the same directory
are reported too (``earlier run``), after the asked ones. Problems are found before any training: the config (unknown, repeated or
no modes, a bad ``train.loss``), the evaluated model, and examples too few for a mode to fill
one optimizer step, each listed with its fix. The report (evaluate/ablation.py) puts the modes side by
side with the paper's reported figures.

Modes and their ``train.loss`` (the paper's ablations: learned weights against fixed uniform,
first-heavy and last-heavy weights, and vanilla KD):

=========== ============================================================
steper      mode steper: learned s_j = log sigma_j^2 per task
uniform     mode uniform, weights (1, 1, 1) for init, exp, agg
first_heavy mode uniform, weights (1.5, 1, 0.5)
last_heavy  mode uniform, weights (0.5, 1, 1.5)
vanilla_kd  mode vanilla_kd: agg examples only, the whole chain as target
=========== ============================================================
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from steper_ray.atomic_dir import own_out_dir
from steper_ray.config import (
    ABLATION_MODES,
    LossConfig,
    SteperConfig,
    dump_config,
    load_config,
    validate,
)
from steper_ray.errors import UserError
from steper_ray.layout import RunLayout
from steper_ray.progress import progress
from steper_ray.reasoning.prompts import TeacherPromptSpec
from steper_ray.evaluate.report import evaluate_summary_problem
from steper_ray.summary import json_type, read_summary, summary_command, write_summary

log = logging.getLogger(__name__)

# Fixed task weights (init, exp, agg) of the paper's weighting ablation.
FIXED_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "uniform": (1.0, 1.0, 1.0),
    "first_heavy": (1.5, 1.0, 0.5),
    "last_heavy": (0.5, 1.0, 1.5),
}


# What an ablation directory holds: a rerun writes into these and nothing else (an --out
# holding other files, e.g. a run directory with its own config.yaml, is refused).
ABLATE_ENTRIES: dict[str, str | frozenset[str]] = {
    **{name: "file" for name in ("config.yaml", "summary.json", "summary.json.tmp", "ablation.md", "ablation.png")},
    **{mode: frozenset({"train", "evaluate"}) for mode in ABLATION_MODES},
}
# The first line of the config.yaml ablate writes: how a rerun knows an interrupted ablation's
# directory (one without a summary.json yet) as its own.
CONFIG_MARK = "# steper-ray ablate: the configuration of this ablation\n"


def _ablation_here(out: Path) -> bool:
    """Whether ``out`` is an ablation's directory: its summary, or the config.yaml ablate wrote."""
    if summary_command(out) == "ablate":
        return True
    try:
        with open(out / "config.yaml", encoding="utf-8") as fh:
            return fh.readline() == CONFIG_MARK
    except (OSError, UnicodeDecodeError):
        return False


def mode_loss(mode: str, base: LossConfig) -> LossConfig:
    """The ``train.loss`` of an ablation mode; target, sigma_lr and init_log_var come from ``base``."""
    if mode not in ABLATION_MODES:
        raise UserError(f"unknown ablation mode {mode!r}; valid modes: {', '.join(ABLATION_MODES)}")
    data = base.model_dump()
    if mode in FIXED_WEIGHTS:
        data.update(mode="uniform", weights=list(FIXED_WEIGHTS[mode]))
    else:
        data["mode"] = mode
    return validate(LossConfig, data, f"ablate mode {mode}")


def ablate_out(cfg: SteperConfig) -> Path:
    return RunLayout(cfg).ablate


def mode_config(cfg: SteperConfig, mode: str, out: Path) -> SteperConfig:
    """``cfg`` for one mode: its loss, train output and run name, evaluate output, and the
    evaluated model = this mode's exported student (an explicit evaluate.model keeps its engine
    settings, with the mode's export as its model)."""
    mode_dir = out / mode
    train = cfg.train.model_copy(update={
        "out": str(mode_dir / "train"), "run_name": f"{cfg.train.run_name}-{mode}",
        "loss": mode_loss(mode, cfg.train.loss),
    })
    model = cfg.evaluate.model
    if model is not None:
        model = model.model_copy(update={"model": str(mode_dir / "train" / "model")})
    evaluate = cfg.evaluate.model_copy(update={"out": str(mode_dir / "evaluate"), "model": model})
    return cfg.model_copy(update={"train": train, "evaluate": evaluate})


def check_ablate(cfg: SteperConfig) -> None:
    """Problems only ablate has with a valid config, all at once."""
    problems = []
    model = cfg.evaluate.model
    if model is not None and model.kind not in ("hf", "vllm"):
        problems.append(f"evaluate.model.kind is {model.kind!r}, but ablate evaluates each mode's trained "
                        "student: set evaluate.model=null (transformers) or evaluate.model.kind to hf or vllm")
    if cfg.train.examples and not Path(cfg.train.examples).exists():
        problems.append(f"train.examples {cfg.train.examples} does not exist; point it at the step "
                        "examples (Parquet) or unset it to use (and if needed generate) <run_dir>/generate/examples")
    if cfg.reasoning.teacher_prompt:
        try:
            TeacherPromptSpec.load(cfg.reasoning.teacher_prompt)
        except UserError as exc:
            problems.append(f"reasoning.teacher_prompt: {exc}")
    if problems:
        raise UserError("ablate cannot run:\n" + "\n".join(f"  - {p}" for p in problems))


def check_modes(cfg: SteperConfig, out: Path) -> None:
    """Every mode still to train has the examples it needs (e.g. enough agg examples for
    vanilla_kd to fill an optimizer step); all modes' problems at once, before any training."""
    from steper_ray.train.trainer import resolve_examples

    by_problem: dict[str, list[str]] = {}  # one line per problem, naming every mode it stops
    for mode in cfg.ablate.modes:
        mcfg = mode_config(cfg, mode, out)
        if not (Path(mcfg.train.out or "") / "summary.json").is_file():
            try:
                resolve_examples(mcfg)
            except UserError as exc:
                by_problem.setdefault(str(exc), []).append(mode)
    problems = [f"{', '.join(modes)}: {problem}" for problem, modes in by_problem.items()]
    if problems:
        raise UserError("ablate cannot train every mode:\n" + "\n".join(f"  - {p}" for p in problems))


def _read(path: Path, mode_dir: Path, evaluation: bool) -> dict[str, Any] | None:
    """The train or evaluate summary at ``path`` (None when absent). Raises UserError naming it,
    with the fix, when it is damaged: not a JSON object, or fields of other types than the ones
    train and evaluate write (the ablation table reads them)."""
    if not path.is_file():
        return None
    try:
        data = read_summary(path)
    except ValueError as exc:
        problem: str | None = str(exc)
    else:
        if evaluation:
            problem = evaluate_summary_problem(data)
        else:
            odd = [k for k, kind in (("loss", "object"), ("final", "object"), ("dropped_examples", "object"),
                                     ("params", "number"), ("steps", "number"), ("examples_used", "number"),
                                     ("wall_s", "number"))
                   if data.get(k) is not None and json_type(data[k]) != kind]
            problem = f"holds {', '.join(odd)} of another JSON type than training writes" if odd else None
        if problem is None:
            return data
    raise UserError(f"{path} {problem}: it is not a summary this command wrote; delete {mode_dir} "
                    "to train and evaluate that mode again")


def check_summaries(cfg: SteperConfig, out: Path) -> None:
    """Every summary an earlier run left in ``out`` reads (``mode_summaries``); all damaged
    ones named at once, before any training (not hours later, when the table is written)."""
    problems = []
    for mode in ABLATION_MODES:
        try:
            mode_summaries(cfg, mode, out)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("ablate cannot use the earlier results in " + f"{out}:\n"
                        + "\n".join(f"  - {p}" for p in problems))


# Settings that do not change what a mode learns or how it is scored (where it runs, how often
# it logs or checkpoints, per-mode paths ablate sets itself): they may differ between the runs
# that fill one ablation's table. Dotted prefixes of config keys.
_OPERATIONAL = (
    "run_dir", "ablate", "serve", "bench", "tiny_model", "generate.out", "generate.index", "generate.replicas",
    "generate.batch_size", "generate.num_cpus", "generate.num_gpus", "generate.teacher.batch_size",
    "generate.teacher.device", "generate.teacher.gpu_memory_utilization", "generate.teacher.tensor_parallel_size",
    "generate.teacher.timeout_s", "generate.teacher.max_retries", "generate.teacher.concurrency",
    "retrieval.recall_at", "index.dataset",
    "index.corpus", "index.format", "index.out", "index.distributed", "index.build", "index.dense.batch_size",
    "index.dense.device", "train.out", "train.loss.mode", "train.loss.weights", "train.offload_optimizer",
    "train.offload_params", "train.gradient_checkpointing", "train.cpus_per_worker", "train.threads_per_worker",
    "train.checkpoint_every", "train.keep_checkpoints", "train.max_failures", "train.log_every",
    "train.mlflow_uri", "train.tensorboard", "evaluate.out", "evaluate.baseline", "evaluate.replicas",
    "evaluate.batch_size", "evaluate.num_cpus", "evaluate.num_gpus", "evaluate.model.model",
    "evaluate.model.batch_size", "evaluate.model.device", "evaluate.model.gpu_memory_utilization",
    "evaluate.model.tensor_parallel_size", "evaluate.model.timeout_s", "evaluate.model.max_retries",
    "evaluate.model.concurrency",
)


def _settings(tree: Any, prefix: str = "") -> dict[str, Any]:
    """The dotted settings of a config dump that shape a mode's result (all but ``_OPERATIONAL``;
    where the step examples are read from is compared as ``examples``, below)."""
    if prefix and any(prefix == k or prefix.startswith(k + ".") for k in _OPERATIONAL):
        return {}
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _settings(value, f"{prefix}.{key}".lstrip(".")).items()}
    return {prefix: tree}


def check_same_settings(cfg: SteperConfig, out: Path) -> None:
    """Refuse (UserError) to add to an ablation whose modes were trained or evaluated with other
    settings: the rows of one table must differ only in the loss. The settings it ran with are
    ``out/config.yaml``; one that no longer loads (an older version's keys) is not compared."""
    recorded_file = out / "config.yaml"
    has_results = any((out / m / part / "summary.json").is_file() for m in ABLATION_MODES for part in ("train", "evaluate"))
    if not has_results:
        return
    fix = ("restore it, or give a new --out; to keep the modes' results anyway, write the settings they ran "
           f"with into it (its first line: {CONFIG_MARK.strip()!r})")
    if not recorded_file.is_file():
        raise UserError(f"{out} holds trained or evaluated modes but not {recorded_file.name}, the settings they ran "
                        f"with, so a rerun cannot check that its rows would match: {fix}")
    try:
        recorded = load_config(recorded_file)
    except UserError as exc:
        problem = next((ln.strip(" -") for ln in str(exc).splitlines()[1:]), str(exc))
        raise UserError(f"{recorded_file}, the settings of the modes in {out}, does not load ({problem}), so a "
                        f"rerun cannot check that its rows would match: {fix}") from None

    def settings(c: SteperConfig) -> dict[str, Any]:
        return {**_settings(c.model_dump(mode="json")), "examples": str(RunLayout(c).examples.resolve())}

    before, now = settings(recorded), settings(cfg)
    changed = [k for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)]
    if changed:
        shown = "; ".join(f"{k}: {before.get(k)!r} there, {now.get(k)!r} now" for k in changed[:8])
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise UserError(
            f"{out} holds modes trained or evaluated with other settings: {shown}{more}. Rows of one "
            f"ablation differ only in the loss: rerun with its settings (`--config {recorded_file}`, "
            "plus your --modes), or give a new --out for the new settings; nothing was changed")


def mode_summaries(cfg: SteperConfig, mode: str, out: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(train summary, evaluate summary) an earlier run left for ``mode`` in ``out``, each None
    when absent. Raises UserError for a damaged one (``_read``)."""
    mcfg = mode_config(cfg, mode, out)
    return (_read(Path(mcfg.train.out or "") / "summary.json", out / mode, evaluation=False),
            _read(Path(mcfg.evaluate.out or "") / "summary.json", out / mode, evaluation=True))


def _teacher_traces(cfg: SteperConfig) -> tuple[dict[str, Any] | None, str]:
    """The generate summary (running the pipeline's generate stage first when the run has no
    examples of its own yet) and a one-line description of the traces for the report."""
    if cfg.train.examples:
        return None, f"step examples from `{cfg.train.examples}`"
    from steper_ray.commands.pipeline import run_pipeline_stage

    row, gen = run_pipeline_stage(cfg, "generate")  # the teacher traces every mode trains on, made once
    log.info("ablate: generate stage %s", row["status"])
    per_task = gen.get("examples_per_task") or {}
    model = f" `{gen['teacher_model']}`" if gen.get("teacher_model") else ""
    text = (f"teacher {gen.get('teacher')}{model}, {gen.get('kept')} of {gen.get('questions')} traces kept, "
            f"{sum(per_task.values())} step examples ({', '.join(f'{t} {n}' for t, n in per_task.items())})")
    return {**gen, "stage_status": row["status"]}, text


def _run_mode(cfg: SteperConfig, mode: str, out: Path) -> dict[str, Any]:
    """Train (unless trained) and evaluate (unless evaluated) one mode; its row of the summary."""
    from steper_ray.evaluate.job import run_evaluate
    from steper_ray.train.trainer import run_train

    mcfg = mode_config(cfg, mode, out)
    loss = mcfg.train.loss
    train_dir, eval_dir = Path(mcfg.train.out or ""), Path(mcfg.evaluate.out or "")
    train, evaluation = mode_summaries(cfg, mode, out)
    if evaluation is not None:
        status = "skipped"
        log.info("ablate %s: trained and evaluated, skipped (delete %s to redo it)", mode, out / mode)
    elif train is not None:
        status = "evaluated"
        log.info("ablate %s: trained, evaluating", mode)
        progress().relabel(f"{mode}: evaluate")
        evaluation = run_evaluate(mcfg)
    else:
        status = "done"
        log.info("ablate %s: training (loss %s)", mode, loss.model_dump())
        progress().relabel(f"{mode}: train")
        train = run_train(mcfg)
        progress().relabel(f"{mode}: evaluate")
        evaluation = run_evaluate(mcfg)
    used = (train or {}).get("loss")
    if used is not None and used != loss.model_dump():
        log.warning("ablate %s: %s was trained with loss %s, not %s; delete %s to retrain it",
                    mode, train_dir, used, loss.model_dump(), out / mode)
    keys = ("out", "model", "student", "params", "steps", "examples_used", "dropped_examples", "final", "wall_s")
    return {
        "status": status,
        "loss": used if used is not None else loss.model_dump(),
        "train": {k: (train or {}).get(k) for k in keys},
        "evaluate": {"out": str(eval_dir), "model": evaluation.get("model"), "wall_s": evaluation.get("wall_s")},
        "metrics": evaluation["metrics"],
    }


def run_ablate(cfg: SteperConfig) -> dict[str, Any]:
    from steper_ray.evaluate.ablation import (
        PAPER_REFERENCE,
        PAPER_SOURCE,
        write_ablation_report,
    )

    t0 = time.perf_counter()
    check_ablate(cfg)
    out = own_out_dir(ablate_out(cfg), ABLATE_ENTRIES, "an ablation's results", _ablation_here, RunLayout(cfg).logs)
    check_summaries(cfg, out)
    check_same_settings(cfg, out)
    generate, traces = _teacher_traces(cfg)
    check_modes(cfg, out)
    (out / "config.yaml").write_text(CONFIG_MARK + dump_config(cfg))  # after the checks: a refusal changes nothing
    modes = {mode: _run_mode(cfg, mode, out) for mode in cfg.ablate.modes}
    # modes an earlier run trained and evaluated here stay in the report: on a CPU the modes of
    # one ablation are often run a few at a time (status "earlier run")
    for mode in ABLATION_MODES:
        if mode not in modes and (Path(mode_config(cfg, mode, out).evaluate.out or "") / "summary.json").is_file():
            modes[mode] = {**_run_mode(cfg, mode, out), "status": "earlier run"}

    first = next(iter(modes.values()))
    dev_questions = {d: m.get("questions") for d, m in first["metrics"].items()}
    for mode, row in modes.items():
        theirs = {d: m.get("questions") for d, m in row["metrics"].items()}
        if theirs != dev_questions:
            log.warning("ablate %s was evaluated on other dev questions (%s) than %s (%s); delete %s "
                        "to evaluate it again", mode, theirs, cfg.ablate.modes[0], dev_questions,
                        Path(row["evaluate"]["out"]))
    model = first["evaluate"]["model"] or {}
    setting = {
        "student": first["train"].get("student"),
        "params": first["train"].get("params"),
        "traces": traces,
        "evaluator": f"{model.get('kind')} on each mode's exported student",
        "dev_questions": dev_questions,
    }
    paths = write_ablation_report(modes, setting, out)
    summary = {
        "command": "ablate",
        "out": str(out),
        "examples": str(RunLayout(cfg).examples),
        "generate": None if generate is None else {
            k: generate.get(k) for k in ("stage_status", "teacher", "teacher_model", "questions", "kept",
                                         "examples_per_task")},
        "setting": setting,
        "modes": modes,
        "paper_reference": {"source": PAPER_SOURCE, "percent": PAPER_REFERENCE},
        **paths,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(out, summary)
    return summary

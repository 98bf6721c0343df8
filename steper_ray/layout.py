"""The run layout: every path under ``run_dir`` and the rule for each default.

One owner for where things go, so every stage, command and report asks here instead of
joining paths itself. A setting that names a directory (``generate.out``, ``train.out``,
``train.examples``, ``evaluate.out``, ``evaluate.index_dir``, ``generate.index``,
``serve.index``, ``index.out``) wins over its default; defaults that depend on another setting
follow it (the step examples live in whatever ``generate.out`` is)::

    <run_dir>/
      config.yaml            the pipeline's configuration
      summary.json           the pipeline's summary (stage table)
      report.html            the run report (the pipeline writes it; `steper-ray report` rebuilds it)
      logs/<stage>.log       each stage's log: Ray, the workers, library warnings
      index/                 stage indexes and the index stage's summary.json
        train/               the training index (generate)              generate.index
        <dev set>/           one per dev set (recall, evaluate, serve)  evaluate.index_dir/<dev set>
        pooled/train/, pooled/<dev set>/   the same with data.corpus 'pooled'
        corpus/<file>-<digest>/            data.corpus a file: one index for every stage
        corpus/<file>-<digest>.source.json the file's size and time when it was indexed
        <source>/            `steper-ray index` without --out           index.out
      retrieval_eval/        recall@k retrieving with the question alone
      models/student/        the offline tiny student                  train.student
      generate/              traces/, examples/, damaged/, summary.json generate.out
      train/                 metrics.jsonl, sigmas.png, train_state.json, checkpoints/ (plain
                             loop), ray/ (Ray Train storage), model/ (the export)   train.out
      evaluate_base/         the untrained student (evaluate.baseline)
      evaluate/              predictions/<dev set>.jsonl, report/, summary.json    evaluate.out
      compare/               `steper-ray evaluate --compare`
      bench/<benchmark>/     `steper-ray bench`

Plain data in, paths out: no file is read or written here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from steper_ray.config import SteperConfig

# Pipeline stages whose directory is not <run_dir>/<stage>: their section's `out` moves them.
_STAGE_DIRS = ("index", "retrieval_eval", "generate", "evaluate_base", "train", "evaluate")


def source_name(source: str) -> str:
    """A directory name for an index built from ``source`` (a dataset or corpus path, or
    ``sample:<file>``): its file name without suffixes, after its folder for bundled samples,
    e.g. ``sample:musique/dev.jsonl`` -> ``musique-dev``, ``/data/hotpot_dev_v1.json.gz`` ->
    ``hotpot_dev_v1``."""
    path = Path(source.split(":", 1)[1] if source.startswith("sample:") else source)
    stem = path.name.split(".", 1)[0] or "index"
    name = f"{path.parent.name}-{stem}" if source.startswith("sample:") and path.parent.name else stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "index"


@dataclass(frozen=True)
class GenerateDir:
    """What generation writes into its directory (``generate.out``, default ``<run_dir>/generate``)."""

    root: Path

    @property
    def traces(self) -> Path:
        """``part-*.parquet``: every input question once, kept or dropped with its reason."""
        return self.root / "traces"

    @property
    def examples(self) -> Path:
        """``part-*.parquet``: the step examples of the kept traces."""
        return self.root / "examples"

    @property
    def damaged(self) -> Path:
        """Parts that did not read back whole, moved aside on resume."""
        return self.root / "damaged"


@dataclass(frozen=True)
class TrainDir:
    """What training writes into its directory (``train.out``, default ``<run_dir>/train``);
    the training workers get only this directory."""

    root: Path

    @property
    def export(self) -> Path:
        """The trained student as a Hugging Face directory (what evaluation and serving load)."""
        return self.root / "model"

    @property
    def metrics(self) -> Path:
        """One JSON line per logged optimizer step (rank 0)."""
        return self.root / "metrics.jsonl"

    @property
    def state(self) -> Path:
        """Steps, examples used and dropped, final metrics: written with the export."""
        return self.root / "train_state.json"

    @property
    def sigma_plot(self) -> Path:
        return self.root / "sigmas.png"

    @property
    def local_checkpoints(self) -> Path:
        """Checkpoints of the plain (non-Ray) loop; Ray Train keeps its own under ``ray_storage``."""
        return self.root / "checkpoints"

    @property
    def ray_storage(self) -> Path:
        """Ray Train's storage path (its runs, checkpoints and state, by run name)."""
        return self.root / "ray"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run. ``RunLayout(cfg)``; every attribute is a ``Path``."""

    cfg: SteperConfig

    @classmethod
    def of_run(cls, run_dir: str | Path) -> RunLayout:
        """The layout of an existing run directory: its ``config.yaml`` (the pipeline writes it)
        with ``run_dir`` set to where the run is now, so a moved run is still found; the
        defaults when it has none or it no longer validates."""
        from steper_ray.config import load_config
        from steper_ray.errors import UserError

        run_dir = Path(run_dir)
        cfg_file = run_dir / "config.yaml"
        try:
            cfg = load_config(cfg_file if cfg_file.is_file() else None)
        except UserError:
            cfg = load_config(None)
        # Set directly, not as a key=value override: a directory name is not YAML ("run #2", "010").
        return cls(cfg.model_copy(update={"run_dir": str(run_dir)}))

    # --- the run itself ------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def config_file(self) -> Path:
        return self.run_dir / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    def log_file(self, stage: str) -> Path:
        """One log per stage or command (``generate``, ``bench-training``, ...)."""
        return self.logs / f"{stage}.log"

    def stage_dir(self, stage: str) -> Path:
        """Where a pipeline stage writes, its ``summary.json`` included."""
        dirs = {"index": self.index_root, "retrieval_eval": self.retrieval_eval,
                "generate": self.generate, "evaluate_base": self.evaluate_base,
                "train": self.train, "evaluate": self.evaluate}
        if stage not in dirs:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(dirs)}")
        return dirs[stage]

    # --- indexes -------------------------------------------------------------------------
    @property
    def index_root(self) -> Path:
        """The stage indexes' directory (and the index stage's summary)."""
        return self.run_dir / "index"

    @property
    def corpus_index(self) -> Path | None:
        """The one index of a corpus file (``data.corpus`` a path), shared by generation, every
        dev set and serving; None for 'questions' and 'pooled'. Its name carries a digest of the
        file's absolute path, so two corpora with the same file name never share an index."""
        file = self.cfg.data.corpus_file
        if file is None:
            return None
        where = file if file.startswith("sample:") else str(Path(file).expanduser().absolute())
        digest = hashlib.sha256(where.encode()).hexdigest()[:8]
        return self.index_root / "corpus" / f"{source_name(file)}-{digest}"

    @property
    def corpus_stamp(self) -> Path | None:
        """Beside the corpus index (an index directory holds only the index): the size and
        modification time of the file it was built from, so a changed file is indexed again."""
        index = self.corpus_index
        return None if index is None else index.parent / f"{index.name}.source.json"

    @property
    def _setting_root(self) -> Path:
        """Where the stage indexes of ``data.corpus`` live: 'questions' directly under index/,
        'pooled' under index/pooled/ (a different setting never reuses another's index)."""
        return self.index_root / "pooled" if self.cfg.data.corpus == "pooled" else self.index_root

    @property
    def train_index(self) -> Path:
        """The index generation retrieves from: ``generate.index``, else built here."""
        if self.cfg.generate.index:
            return Path(self.cfg.generate.index)
        return self.corpus_index or self._setting_root / "train"

    @property
    def train_index_is_ours(self) -> bool:
        """Whether the run may build (and rebuild) the training index."""
        return not self.cfg.generate.index

    @property
    def dev_indexes_are_ours(self) -> bool:
        """Whether the run may build the dev indexes (a user's ``evaluate.index_dir`` never)."""
        return not self.cfg.evaluate.index_dir

    def dev_index(self, dataset: str) -> Path:
        if self.cfg.evaluate.index_dir:
            return Path(self.cfg.evaluate.index_dir) / dataset
        return self.corpus_index or self._setting_root / dataset

    @property
    def serve_index(self) -> Path | None:
        """``serve.index``, else the first dev set's index; None when there is neither."""
        if self.cfg.serve.index:
            return Path(self.cfg.serve.index)
        return self.dev_index(self.cfg.data.dev[0].name) if self.cfg.data.dev else None

    @property
    def command_index(self) -> Path:
        """Where `steper-ray index` writes: ``index.out``, else its own directory beside the
        stage indexes, named after its source (never the stage index directory itself)."""
        if self.cfg.index.out:
            return Path(self.cfg.index.out)
        source = self.cfg.index.dataset or self.cfg.index.corpus or "index"
        name = source_name(source)
        reserved = {"train", "pooled", "corpus", *(d.name for d in self.cfg.data.dev)}
        return self.index_root / (f"{name}-index" if name in reserved else name)

    @property
    def retrieval_eval(self) -> Path:
        return self.run_dir / "retrieval_eval"

    # --- models --------------------------------------------------------------------------
    @property
    def tiny_student(self) -> Path:
        """The offline tiny student, built here when ``train.student`` is unset."""
        return self.run_dir / "models" / "student"

    # --- generate ------------------------------------------------------------------------
    @property
    def generate(self) -> Path:
        return Path(self.cfg.generate.out) if self.cfg.generate.out else self.run_dir / "generate"

    @property
    def generated(self) -> GenerateDir:
        return GenerateDir(self.generate)

    @property
    def traces(self) -> Path:
        return self.generated.traces

    @property
    def examples(self) -> Path:
        """The step examples training reads: ``train.examples``, else generate's examples."""
        return Path(self.cfg.train.examples) if self.cfg.train.examples else self.generated.examples

    # --- train ---------------------------------------------------------------------------
    @property
    def train(self) -> Path:
        return Path(self.cfg.train.out) if self.cfg.train.out else self.run_dir / "train"

    @property
    def trained(self) -> TrainDir:
        """The files inside the training directory (metrics, export, checkpoints, ...)."""
        return TrainDir(self.train)

    @property
    def export(self) -> Path:
        """The trained student as a Hugging Face directory (what evaluation and serving load)."""
        return self.trained.export

    # --- evaluate ------------------------------------------------------------------------
    @property
    def evaluate(self) -> Path:
        return Path(self.cfg.evaluate.out) if self.cfg.evaluate.out else self.run_dir / "evaluate"

    @property
    def evaluate_base(self) -> Path:
        return self.run_dir / "evaluate_base"

    @property
    def ablate(self) -> Path:
        """``steper-ray ablate``: one directory per loss mode, the table and chart."""
        return Path(self.cfg.ablate.out) if self.cfg.ablate.out else self.run_dir / "ablate"

    @property
    def compare(self) -> Path:
        return self.run_dir / "compare"

    def bench(self, which: str) -> Path:
        return self.run_dir / "bench" / which


def predictions_file(evaluate_dir: Path, dataset: str) -> Path:
    """One dev set's predictions inside an evaluation directory (this run's or another's)."""
    return Path(evaluate_dir) / "predictions" / f"{dataset}.jsonl"

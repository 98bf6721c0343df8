"""Index recipes: `steper-ray index` (a dataset's pooled paragraphs or a corpus, built and
saved), and the run's stage indexes (the training index, one per dev set), built when missing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steper_ray.config import DatasetSpec, IndexConfig, SteperConfig
from steper_ray.data import extract_corpus, read_corpus, read_dataset
from steper_ray.data.paths import resolve_data_path
from steper_ray.data.records import BadRecord, Passage
from steper_ray.errors import UserError
from steper_ray.layout import RunLayout
from steper_ray.retrieval import build_index
from steper_ray.retrieval.protocol import Retriever
from steper_ray.retrieval.distributed import build_distributed, remove_work, use_distributed
from steper_ray.retrieval.store import check_index_dir, check_index_target
from steper_ray.summary import write_summary

log = logging.getLogger(__name__)


def load_passages(cfg: SteperConfig) -> tuple[list[Passage], list[BadRecord], dict[str, Any]]:
    """The corpus named by ``cfg.index`` (dataset paragraphs or a corpus file)."""
    ix = cfg.index
    if ix.corpus:
        corpus = read_corpus(ix.corpus)
        return corpus.passages, corpus.bad, {"corpus": ix.corpus, "read": corpus.summary()}
    if not ix.dataset:
        raise UserError("nothing to index: pass --dataset PATH or --corpus PATH "
                        "(or set index.dataset / index.corpus in the config)")
    result = read_dataset(ix.dataset, ix.format)
    passages = extract_corpus(result.records)
    if not passages:
        raise UserError(f"{ix.dataset}: no paragraphs to index ({result.summary()})")
    return passages, result.bad, {"dataset": ix.dataset, "read": result.summary()}


def stage_passages(cfg: SteperConfig, dev: DatasetSpec | None = None) -> tuple[list[Passage], dict[str, Any]]:
    """The passages of a stage index as ``data.corpus`` says, and what was read: the training
    index (``dev`` None) or dev set ``dev``'s.

    - 'questions': every training question's paragraphs (also past a limit), or the dev set's
      own questions' paragraphs (after its limit);
    - 'pooled': every paragraph of every split given for the dataset (the data.train and data.dev
      entries of the dev set's name, or of the training datasets' names), no limit;
    - a corpus file: its passages (``read_corpus``), the same for every stage.

    Pooled paragraphs are deduplicated on title + text. Raises DataError for unreadable data and
    UserError when there is nothing to index.
    """
    data = cfg.data
    if data.corpus_file:
        read = read_corpus(data.corpus_file)
        return read.passages, {"corpus": data.corpus_file, "read": read.summary()}
    if data.corpus == "pooled":
        names = {dev.name} if dev else {spec.name for spec in data.train}
        specs = [spec for spec in (*data.train, *data.dev) if spec.name in names]
        passages = extract_corpus(r for spec in specs for r in read_dataset(spec.path, spec.format, name=spec.name).records)
        what: dict[str, Any] = {"corpus": "pooled", "splits": [spec.path for spec in specs]}
    elif dev is not None:
        result = read_dataset(dev.path, dev.format, dev.limit, name=dev.name)
        passages, what = extract_corpus(result.records), {"corpus": "questions", **result.summary()}
    else:
        # all paragraphs, also of questions past the limit, pooled and deduplicated
        passages = extract_corpus(
            r for spec in data.train for r in read_dataset(spec.path, spec.format, name=spec.name).records)
        what = {"corpus": "questions", "splits": [spec.path for spec in data.train]}
    if not passages:
        where = f"dev set {dev.name!r}" if dev else "the training datasets"
        raise UserError(f"{where} have no paragraphs to index with data.corpus={data.corpus!r}; give a "
                        "corpus file (data.corpus=PATH)" + ("" if dev else " or an index (generate.index)"))
    return passages, what


def _source_stamp(file: str) -> dict[str, Any]:
    path = resolve_data_path(file, "corpus file")
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _usable(cfg: SteperConfig, path: Path) -> bool:
    """Whether the stage index at ``path`` can be used as it is: complete, and for a corpus file
    built from the file as it is now (same size and modification time)."""
    try:
        check_index_dir(path)
    except UserError:
        return False
    if not cfg.data.corpus_file:
        return True
    stamp = RunLayout(cfg).corpus_stamp
    try:
        same = stamp is not None and json.loads(stamp.read_text()) == _source_stamp(cfg.data.corpus_file)
    except (OSError, ValueError):
        same = False
    if not same:
        log.warning("%s changed since its index %s was built; rebuilding it", cfg.data.corpus_file, path)
    return same


def _build_saved(ix: IndexConfig, corpus_file: str | None, out: Path,
                 passages: Callable[[], tuple[list[Passage], dict[str, Any]]], progress: bool = True
                 ) -> tuple[Retriever, dict[str, Any]]:
    """Build index ``ix`` and save it at ``out``: corpus file ``corpus_file`` on Ray Data when
    ``use_distributed`` says so (its parts removed once the index is saved), else the passages
    ``passages()`` returns (with what was read), in this process. The retriever and what was
    read and built (``build_s``: the build, without saving)."""
    t0 = time.perf_counter()
    if corpus_file is not None and use_distributed(ix, corpus_file):
        log.info("indexing %s (%s) on Ray Data into %s", corpus_file, ix.kind, out)
        retriever, what = build_distributed(corpus_file, ix, out)
        what = {"corpus": corpus_file, **what}
    else:
        if ix.distributed is True and corpus_file is None:
            log.warning("index.distributed=true applies to corpus files; dataset paragraphs are indexed in this process")
        rows, what = passages()
        log.info("indexing %d passages (%s) into %s", len(rows), ix.kind, out)
        retriever = build_index(rows, ix, progress=progress)
    build_s = time.perf_counter() - t0
    retriever.save(out)
    remove_work(out)
    return retriever, {**what, "passages": len(retriever), "build_s": round(build_s, 3)}


def _build_stage_index(cfg: SteperConfig, path: Path, dev: DatasetSpec | None) -> dict[str, Any]:
    """Build the stage index at ``path`` (``stage_passages``; a big corpus file on Ray Data,
    ``use_distributed``); what was read and built."""
    stamp = _source_stamp(cfg.data.corpus_file) if cfg.data.corpus_file else None  # before reading
    _, what = _build_saved(cfg.index, cfg.data.corpus_file, path, lambda: stage_passages(cfg, dev), progress=False)
    stamp_file = RunLayout(cfg).corpus_stamp
    if stamp is not None and stamp_file is not None:  # a corpus file: path is its one index
        stamp_file.write_text(json.dumps(stamp) + "\n")
    return what


def build_dev_index(spec: DatasetSpec, cfg: SteperConfig, path: Path) -> dict[str, Any]:
    """Index dev set ``spec`` at ``path`` (what it holds: ``stage_passages``); what was read and built."""
    return _build_stage_index(cfg, path, spec)


def dev_indexes(cfg: SteperConfig) -> dict[str, str]:
    """The index of every dev set (``RunLayout.dev_index``). The run's own are built when
    missing or unreadable; a user's ``evaluate.index_dir`` is only checked, never built over
    (IndexLoadError naming the rebuild command)."""
    layout = RunLayout(cfg)
    out = {}
    for spec in cfg.data.dev:
        path = layout.dev_index(spec.name)
        if not layout.dev_indexes_are_ours:
            check_index_dir(path)  # a user's index: checked, never built over
        elif not _usable(cfg, path):
            build_dev_index(spec, cfg, path)
        out[spec.name] = str(path.resolve())  # absolute: the evaluation actors may run elsewhere
    return out


def train_index(cfg: SteperConfig) -> Path:
    """The index generation retrieves from: ``generate.index`` (checked, never built over), or
    the run's training index (``stage_passages``), built when missing or unreadable."""
    layout = RunLayout(cfg)
    path = layout.train_index
    if not layout.train_index_is_ours:
        check_index_dir(path)  # fail before starting actors, with the rebuild hint
    elif not _usable(cfg, path):
        _build_stage_index(cfg, path, None)
    return path


def run_index(cfg: SteperConfig) -> dict[str, Any]:
    """Build the index ``cfg.index`` names into ``index.out``, or without it into its own
    directory beside the stage indexes (``RunLayout.command_index``). Raises UserError, before
    reading anything, when the target holds anything but an index."""
    out = RunLayout(cfg).command_index
    check_index_target(out)
    t0 = time.perf_counter()
    bad: list[BadRecord] = []

    def passages() -> tuple[list[Passage], dict[str, Any]]:
        rows, found, what = load_passages(cfg)
        bad.extend(found)
        return rows, what

    retriever, source = _build_saved(cfg.index, cfg.index.corpus, out, passages)
    if "bad_examples" in source:  # built on Ray Data: its read counted the bad entries
        bad_count, bad_examples = source["read"]["bad"], source.pop("bad_examples")
    else:
        bad_count, bad_examples = len(bad), [b.to_dict() for b in bad[:5]]
    summary = {
        "command": "index",
        "out": str(out),
        "kind": cfg.index.kind,
        "backend": cfg.index.bm25.backend if cfg.index.kind == "bm25" else cfg.index.dense.index_type,
        "passages": len(retriever),
        "shards": cfg.index.shards,
        "warnings": list(getattr(retriever, "warnings", [])),
        "bad_records": bad_count,
        "bad_examples": bad_examples,
        **source,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(out, summary)
    return summary

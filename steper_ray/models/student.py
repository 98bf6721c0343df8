"""The student models of a run: the base model training starts from, and the trained export
that evaluation and serving load. No training code is imported here (serving needs none)."""

from __future__ import annotations

import logging
from pathlib import Path

from steper_ray.config import GeneratorConfig, SteperConfig
from steper_ray.errors import UserError
from steper_ray.layout import RunLayout

log = logging.getLogger(__name__)


def resolve_student(cfg: SteperConfig) -> str:
    """The base student's directory: ``train.student`` (a directory, or 'smollm2' prepared on
    first use), else the offline tiny Llama, built into the run the first time. Raises
    UserError when ``train.student`` is not a Hugging Face model directory."""
    if cfg.train.student:
        from steper_ray.models.prepare import resolve_model

        student = resolve_model(cfg.train.student)
        if not (Path(student) / "config.json").is_file():
            raise UserError(f"train.student {cfg.train.student} is not a Hugging Face model directory "
                            "(no config.json); point it at a local model or use 'smollm2'")
        return student
    path = RunLayout(cfg).tiny_student
    if not (path / "config.json").is_file():
        from steper_ray.commands.tiny_model import run_tiny_model

        log.info("building the offline tiny student at %s", path)
        run_tiny_model(cfg, path)
    return str(path)


def trained_student(cfg: SteperConfig, setting: str, engine: str = "hf") -> GeneratorConfig:
    """This run's exported student on ``engine`` (its prompt format is recorded in the export);
    ``setting`` is the key that picks another model, named in the UserError when there is none."""
    path = RunLayout(cfg).export
    if not (path / "config.json").is_file():
        raise UserError(f"no trained student: no model at {path}; run `steper-ray train` first, or set "
                        f"{setting} (e.g. {setting}.kind=hf {setting}.model=DIR)")
    return GeneratorConfig(kind=engine, model=str(path))


def base_student(cfg: SteperConfig, engine: str = "hf") -> GeneratorConfig:
    """The untrained student (train.student, or the offline tiny Llama) in the student's prompt
    format, for a zero-shot baseline."""
    return GeneratorConfig(kind=engine, model=resolve_student(cfg), prompt_format=cfg.train.prompt_format)

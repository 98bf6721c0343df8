from __future__ import annotations

import json
from pathlib import Path

import pytest

from steper_ray.config import BM25Config
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError
from steper_ray.retrieval import load_index
from steper_ray.retrieval.bm25 import BM25Retriever


@pytest.fixture()
def saved(tmp_path: Path, musique_corpus: list[Passage]) -> Path:
    return BM25Retriever.build(musique_corpus[:200], BM25Config()).save(tmp_path / "ix")


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexLoadError, match="does not exist.*steper-ray index"):
        load_index(tmp_path / "nope")


def test_partial_index_without_manifest(saved: Path) -> None:
    (saved / "manifest.json").unlink()
    with pytest.raises(IndexLoadError, match="not a complete index.*rebuild"):
        load_index(saved)


def test_truncated_file_is_reported_by_name(saved: Path) -> None:
    target = saved / "passages.parquet"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(IndexLoadError, match=r"partial or corrupt \(passages.parquet has 100 bytes"):
        load_index(saved)


def test_missing_file_is_reported_by_name(saved: Path) -> None:
    victim = next(p for p in (saved / "bm25s").iterdir() if p.name.startswith("vocab"))
    victim.unlink()
    with pytest.raises(IndexLoadError, match=f"bm25s/{victim.name} is missing"):
        load_index(saved)


def test_garbage_with_right_size_is_corrupt(saved: Path) -> None:
    target = saved / "passages.parquet"
    target.write_bytes(b"\0" * target.stat().st_size)
    with pytest.raises(IndexLoadError, match="cannot be read.*rebuild"):
        load_index(saved)


def test_corrupt_manifest(saved: Path) -> None:
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(IndexLoadError, match="manifest.json is corrupt"):
        load_index(saved)
    (saved / "manifest.json").write_text(json.dumps({"format_version": 99, "kind": "bm25", "files": {}}))
    with pytest.raises(IndexLoadError, match="index format 99"):
        load_index(saved)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(IndexLoadError, match="is a file"):
        load_index(f)

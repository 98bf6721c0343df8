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
    with pytest.raises(IndexLoadError, match="is a file") as info:
        load_index(f)
    # a corpus file given as --index: the fix builds an index from it, never --out over the file
    assert f"steper-ray index --corpus {f} --out DIR" in str(info.value)
    assert f"--out {f}" not in str(info.value)


def _same_size(path: Path, data: bytes) -> None:
    size = path.stat().st_size
    path.write_bytes((data + b"\0" * size)[:size])


def _resize_in_manifest(root: Path, name: str) -> None:
    """Record a file's new size, as if the damage had happened before the manifest was written."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][name] = (root / name).stat().st_size
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_bm25s_matrix_of_the_right_size_but_damaged_is_caught(saved: Path) -> None:
    import numpy as np

    data = saved / "bm25s/data.csc.index.npy"
    scores = np.load(data)
    scores[7] = np.nan
    np.save(data, scores)
    with pytest.raises(IndexLoadError, match=r"bm25s are corrupt \(the score matrix holds .*non-finite"):
        load_index(saved)
    indices = saved / "bm25s/indices.csc.index.npy"
    rows = np.load(indices)
    rows[3] = 10_000
    np.save(indices, rows)
    np.save(data, np.abs(np.nan_to_num(scores)))
    with pytest.raises(IndexLoadError, match="out-of-range positions"):
        load_index(saved)


def test_npy_and_json_files_with_garbage_are_named(saved: Path) -> None:
    victim = saved / "bm25s/indptr.csc.index.npy"
    _same_size(victim, b"garbage")
    with pytest.raises(IndexLoadError, match=r"corrupt \(bm25s/indptr.csc.index.npy cannot be read.*steper-ray index"):
        load_index(saved)


def test_vocab_json_with_garbage_is_named(saved: Path) -> None:
    victim = saved / "bm25s/vocab.index.json"
    _same_size(victim, b'{"cut short')
    with pytest.raises(IndexLoadError, match=r"bm25s/vocab.index.json cannot be read: JSONDecodeError"):
        load_index(saved)


def test_passages_with_other_row_count_are_caught(saved: Path) -> None:
    import pyarrow.parquet as pq

    target = saved / "passages.parquet"
    pq.write_table(pq.read_table(target).slice(0, 150), target)
    _resize_in_manifest(saved, "passages.parquet")
    with pytest.raises(IndexLoadError, match="passages.parquet has 150 rows, the manifest says 200 passages"):
        load_index(saved)


def test_damaged_column_data_with_intact_footer_is_caught(saved: Path) -> None:
    target = saved / "passages.parquet"
    raw = bytearray(target.read_bytes())
    raw[8:2000] = b"\xff" * 1992  # column chunks; the footer at the end still parses
    target.write_bytes(bytes(raw))
    with pytest.raises(IndexLoadError, match="passages.parquet cannot be read"):
        load_index(saved)


def test_an_index_never_holds_one_id_twice() -> None:
    passages = [Passage("42", "Falcon Ridge", "A ridge."), Passage("42", "Heron Bay", "A bay.")]
    with pytest.raises(ValueError, match=r"passage ids must be unique \(repeated: \['42'\]\)"):
        BM25Retriever.build(passages, BM25Config())

"""Generate outputs read back whole on resume (no Ray): damaged parts are moved aside so their
questions are generated again."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steper_ray.errors import UserError
from steper_ray.generate.job import error_row
from steper_ray.generate.store import PartStore, part_problem


def _trace(qid: str, kept: bool = True) -> dict:
    return {**error_row(qid, "d", f"question {qid}", ["a"], "x"), "kept": kept, "drop_reason": None if kept else "x",
            "error": None, "num_steps": 2}


def _examples(qid: str) -> list[dict]:
    return [{"id": f"{qid}:{s}", "question_id": qid, "task": t, "step": s, "prompt": "p" * 200, "completion": " c\n"}
            for s, t in ((1, "init"), (2, "agg"))]


@pytest.fixture()
def store(tmp_path: Path) -> PartStore:
    s = PartStore(tmp_path / "gen")
    for batch in (["q1", "q2"], ["q3", "q4"], ["q5"]):
        s.write([_trace(q) for q in batch], [e for q in batch for e in _examples(q)])
    s.write([_trace("bad1", kept=False)], [])
    return s


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def test_whole_parts_pass(store: PartStore) -> None:
    assert store.quarantine_damaged() == []
    assert store.done_ids() == {"q1", "q2", "q3", "q4", "q5", "bad1"}


def test_a_traces_part_cut_to_half_is_moved_aside_and_its_questions_redone(store: PartStore) -> None:
    victim = _parts(store.traces)[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert part_problem(victim, ("question_id",)).startswith("cannot be read (ArrowInvalid")
    moved = store.quarantine_damaged()
    assert [(m["part"], m["file"]) for m in moved] == [(victim.name, str(victim))]
    assert store.done_ids() == {"q1", "q2", "q5", "bad1"}  # q3, q4 are generated again
    assert sorted(p.name for p in (store.out / "damaged/traces").iterdir()) == [victim.name]
    assert sorted(p.name for p in (store.out / "damaged/examples").iterdir()) == [victim.name]
    assert store.totals()["questions"] == 4  # everything left reads back
    assert store.quarantine_damaged() == []


def test_a_damaged_examples_part_takes_its_traces_part_along(store: PartStore) -> None:
    victim = _parts(store.examples)[0]
    data = bytearray(victim.read_bytes())
    data[4:200] = b"\xff" * 196  # inside the column chunks; the footer still parses
    victim.write_bytes(bytes(data))
    moved = store.quarantine_damaged()
    assert [m["file"] for m in moved] == [str(victim)] and "cannot be read" in moved[0]["problem"]
    assert store.done_ids() == {"q3", "q4", "q5", "bad1"}


def test_an_examples_part_that_misses_kept_questions_is_damaged(store: PartStore) -> None:
    victim = _parts(store.examples)[2]
    pq.write_table(pq.read_table(victim).slice(0, 0), victim)  # readable, but empty
    moved = store.quarantine_damaged()
    assert len(moved) == 1 and moved[0]["problem"].endswith("covers 0 question(s), its traces part keeps 1")
    assert "q5" not in store.done_ids()


def test_a_part_that_cannot_be_moved_aside_is_a_user_error_naming_it(store: PartStore) -> None:
    victim = _parts(store.traces)[0]
    victim.write_bytes(b"PAR1 not really")
    (store.out / "damaged").write_text("in the way")
    with pytest.raises(UserError, match=f"{victim.name} cannot be read .*delete .* and rerun"):
        store.quarantine_damaged()


def test_a_directory_with_other_data_is_refused_untouched(tmp_path: Path) -> None:
    # resuming removes half-written parts: it must never take a user's file for one
    cases = {"notes": ("examples/notes.txt", "examples/notes.txt"), "draft": ("traces/draft.tmp", "traces/draft.tmp"),
             "sub": ("examples/sub/x", "examples/sub"), "top": ("keep.txt", "keep.txt"),
             "summary": ("summary.json", "summary.json")}
    for name, (file, shown) in cases.items():
        out = tmp_path / name
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        (out / file).write_text('{"command": "index"}')
        with pytest.raises(UserError, match=rf"holds other data \({shown}/?\), not the traces .*nothing was changed"):
            PartStore(out)
        assert (out / file).read_text() == '{"command": "index"}'
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        PartStore(tmp_path / "f")


def test_a_generate_directory_is_reopened_and_its_leftovers_removed(store: PartStore) -> None:
    (store.out / "summary.json").write_text('{"command": "generate"}')
    (store.traces / ".part-00009-abc123.parquet.tmp").write_bytes(b"half")
    orphan = store.examples / "part-00009-abc123.parquet"
    orphan.write_bytes(_parts(store.examples)[0].read_bytes())  # an examples part without its traces part
    again = PartStore(store.out)
    assert again.recover() == 2 and not orphan.exists()
    assert len(_parts(again.traces)) == 4 and again.quarantine_damaged() == []


def test_a_missing_corpus_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from steper_ray.config import load_config
    from steper_ray.errors import DataError
    from steper_ray.generate.job import run_generate

    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"data.corpus={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(DataError, match="data.corpus file .*nope.jsonl does not exist; check the path .*data.corpus=pooled"):
        run_generate(cfg)
    assert not (tmp_path / "run").exists()  # no empty traces/ and examples/ left behind

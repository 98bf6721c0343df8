"""Gold paragraphs a file does not hold and MuSiQue-Full's unanswerable twins, downstream of the
reader (no Ray): retrieval recall counts absent gold as misses and leaves the twins out, and
generation never turns a twin into a training question."""

from __future__ import annotations

import json
from pathlib import Path

from steper_ray.commands.index import build_dev_index
from steper_ray.commands.pipeline import stage_retrieval_eval
from steper_ray.config import load_config
from steper_ray.data.paths import SAMPLE_DIR
from steper_ray.generate.job import read_training_questions


def test_recall_counts_absent_gold_as_misses_and_skips_unanswerable_twins(tmp_path: Path) -> None:
    hotpot = [json.loads(x) for x in (SAMPLE_DIR / "hotpotqa/dev.jsonl").read_text().splitlines()[:3]]
    # fullwiki: keep only paragraphs that are not gold, plus one gold of the first question
    for i, rec in enumerate(hotpot):
        gold = {t for t, _ in rec["supporting_facts"]}
        keep = [c for c in rec["context"] if c[0] not in gold]
        if i == 0:
            keep.append(next(c for c in rec["context"] if c[0] in gold))
        rec["context"] = keep
        rec["supporting_facts"] += [["Absent Title", 0], ["Other Absent Title", 0]]
    hp = tmp_path / "fullwiki.jsonl"
    hp.write_text("".join(json.dumps(r) + "\n" for r in hotpot))
    musique = [json.loads(x) for x in (SAMPLE_DIR / "musique/dev.jsonl").read_text().splitlines()[:2]]
    twins = [{**musique[0], "answerable": False}, musique[0], {**musique[1], "answerable": False}, musique[1]]
    mu = tmp_path / "musique_full.jsonl"
    mu.write_text("".join(json.dumps(r) + "\n" for r in twins))

    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", "retrieval.recall_at=[10]",
                             f"data.dev=[{{name: hp, path: '{hp}'}}, {{name: mu, path: '{mu}'}}]"])
    for spec in cfg.data.dev:
        build_dev_index(spec, cfg, tmp_path / "run/index" / spec.name)
    metrics = stage_retrieval_eval(cfg, tmp_path)["metrics"]
    # question 1: 1 of 4 gold paragraphs in the file, question 2 and 3: 0 of 4; retrieving
    # every paragraph of the file can find at most that one
    assert metrics["hp"]["questions"] == 3 and metrics["hp"]["recall@10"] <= round(0.25 / 3, 4)
    rows = [json.loads(x) for x in (tmp_path / "hp.jsonl").read_text().splitlines()]
    assert [len(r["gold_ids"]) for r in rows] == [4, 4, 4]
    # the unanswerable twins are neither scored nor duplicates of their answerable twins
    assert metrics["mu"]["questions"] == 2 and metrics["mu"]["unanswerable_not_scored"] == 2
    assert [r["id"] for r in (json.loads(x) for x in (tmp_path / "mu.jsonl").read_text().splitlines())] == \
        [musique[0]["id"], musique[1]["id"]]


def test_unanswerable_twins_become_dropped_rows_not_questions(tmp_path: Path) -> None:
    rec = json.loads((SAMPLE_DIR / "musique/dev.jsonl").read_text().splitlines()[0])
    f = tmp_path / "full.jsonl"
    f.write_text(json.dumps({**rec, "answerable": False}) + "\n" + json.dumps(rec) + "\n")
    cfg = load_config(None, [f"run_dir={tmp_path}", f"data.train=[{{name: mu, path: '{f}'}}]"])
    records, rows = read_training_questions(cfg)
    assert [r.id for r in records] == [rec["id"]]
    assert [(r["question_id"], r["kept"], r["error"], r["drop_reason"].split(":")[0]) for r in rows] == [
        (f"{rec['id']}::unanswerable", False, None, "unanswerable")]

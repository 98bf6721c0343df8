"""The reasoner job's parts without Ray: records as Arrow rows, the two stages on an Arrow batch,
and the actor resources both jobs get (tensor-parallel placement for generate and evaluate)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from steper_ray.config import GeneratorConfig, SteperConfig, load_config
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.data.record_table import RECORD_SCHEMA, records_from_table, records_table
from steper_ray.evaluate.scoring import PREDICTION_SCHEMA
from steper_ray.evaluate.stage import EvalStage
from steper_ray.generate.stage import TeacherStage
from steper_ray.generate.store import TEACHER_ROW_SCHEMA
from steper_ray.reasoning.generators.evidence import evidence_sentences
from steper_ray.reasoning.job import ActorPool, actor_resources
from steper_ray.retrieval import build_index


@pytest.mark.parametrize("path", ["sample:hotpotqa/dev.jsonl", "sample:musique/train.json",
                                  "sample:2wikimultihopqa/dev.jsonl"])
def test_records_travel_as_typed_arrow_rows(path: str) -> None:
    records = read_dataset(path, limit=8).records
    table = records_table(records)
    assert table.schema == RECORD_SCHEMA and table.num_rows == 8
    back = records_from_table(table)
    for a, b in zip(records, back):
        assert (a.id, a.question, a.answers, a.dataset, a.gold_ids, a.supporting_facts) == \
               (b.id, b.question, b.answers, b.dataset, b.gold_ids, b.supporting_facts)
        assert a.answerable == b.answerable
        assert evidence_sentences(a) == evidence_sentences(b)  # what the evidence teacher writes


def test_unanswerable_twin_and_odd_values_survive_the_trip() -> None:
    rec = read_dataset("sample:musique/dev.jsonl", limit=1).records[0]
    rec.meta.update({"answerable": False, "level": 3, "evidences": [["a", "born in", 1932]]})
    rec.decomposition.append({"question": "x >> y", "answer": "z", "paragraph_support_idx": "n/a"})
    (back,) = records_from_table(records_table([rec]))
    assert back.answerable is False and back.meta["level"] == "3"
    assert back.meta["evidences"] == [["a", "born in", "1932"]]
    assert back.decomposition[-1] == {"question": "x >> y", "answer": "z"}


@pytest.fixture(scope="module")
def hotpot_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    records = read_dataset("sample:hotpotqa/dev.jsonl", limit=6).records
    path = tmp_path_factory.mktemp("ix") / "hotpotqa"
    build_index(extract_corpus(records), SteperConfig().index, progress=False).save(path)
    return str(path)


def test_teacher_and_eval_stages_take_and_return_arrow_batches(hotpot_index: str) -> None:
    cfg = SteperConfig()
    records = read_dataset("sample:hotpotqa/dev.jsonl", limit=6, name="hotpotqa").records
    batch = records_table(records)
    teacher = TeacherStage(cfg.generate.model_dump(), cfg.reasoning.model_dump(), hotpot_index, 4)
    out = teacher(batch)
    assert isinstance(out, pa.Table) and out.schema == TEACHER_ROW_SCHEMA and out.num_rows == 6
    rows = out.to_pylist()
    assert [r["question_id"] for r in rows] == [r.id for r in records]
    kept = [r for r in rows if r["kept"]]
    assert kept and all(len(r["examples"]) == r["num_steps"] for r in kept)
    assert all(r["examples"] == [] for r in rows if not r["kept"])

    evaluator = EvalStage(GeneratorConfig(kind="evidence").model_dump(), "teacher", cfg.reasoning.model_dump(),
                          {"hotpotqa": hotpot_index}, 4)
    preds = evaluator(batch)
    assert preds.schema == PREDICTION_SCHEMA and preds.num_rows == 6
    first = preds.to_pylist()[0]
    assert first["dataset"] == "hotpotqa" and first["steps"][0]["query"] == records[0].question
    assert first["em"] in (0.0, 1.0)


def test_tensor_parallel_models_get_a_placement_group_in_both_jobs() -> None:
    pool = ActorPool(replicas=2, batch_size=8, num_cpus=2.0, num_gpus=1.0)
    tp4 = GeneratorConfig(kind="vllm", model="/m", tensor_parallel_size=4)
    args = actor_resources(tp4, pool)
    assert args["num_cpus"] == 0 and callable(args["ray_remote_args_fn"]) and "num_gpus" not in args
    assert actor_resources(GeneratorConfig(kind="vllm", model="/m"), pool) == {"num_cpus": 2.0, "num_gpus": 1.0}
    assert actor_resources(GeneratorConfig(kind="hf", model="/m", tensor_parallel_size=4),
                           ActorPool(1, 8)) == {"num_cpus": 1.0}


def test_evaluate_runs_the_reasoner_job_with_its_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation goes through the same job function as generation, model and pool included, so a
    TP > 1 student gets its placement group (actor_resources, above)."""
    import steper_ray.evaluate.job as evaluate_job

    calls = []

    def fake_job(records, stage, kwargs, model, pool, **_):  # type: ignore[no-untyped-def]
        calls.append((len(records), stage, model, pool))
        return iter([])

    monkeypatch.setattr(evaluate_job, "run_reasoner_job", fake_job)
    student = tmp_path / "student"  # what the check before any engine wants; the job itself is faked
    student.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (student / name).write_text("{}")
    cfg = load_config(None, [f"run_dir={tmp_path}", "data.dev=[{name: mu, path: 'sample:musique/dev.jsonl', limit: 3}]",
                             "evaluate.model.kind=vllm", f"evaluate.model.model={student}",
                             "evaluate.model.tensor_parallel_size=4", "evaluate.replicas=2", "evaluate.num_gpus=1"])
    summary = evaluate_job.run_evaluate(cfg)
    ((n, stage, model, pool),) = calls
    assert n == 3 and stage is EvalStage and model.tensor_parallel_size == 4
    assert pool == ActorPool(2, 16, 1.0, 1.0, "evaluate") and "ray_remote_args_fn" in actor_resources(model, pool)
    assert summary["questions"] == 0


@pytest.mark.usefixtures("ray_session")
def test_actors_no_node_can_hold_are_refused_on_our_own_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Ray this process started (no autoscaler) a GPU actor on a CPU machine would wait
    forever: refused at once naming the section's settings; on a cluster only logged."""
    from steper_ray import ray_session
    from steper_ray.errors import UserError
    from steper_ray.reasoning.job import run_reasoner_job

    records = read_dataset("sample:hotpotqa/dev.jsonl").records[:1]
    model = GeneratorConfig(kind="evidence")
    monkeypatch.setattr(ray_session, "_started", True)
    with pytest.raises(UserError, match=r"needs 1 CPU and 1 GPU.*lower evaluate.num_cpus / evaluate.num_gpus"):
        next(run_reasoner_job(records, EvalStage, {}, model, ActorPool(1, 1, 1.0, 1.0, "evaluate")))
    monkeypatch.setattr(ray_session, "_started", False)
    ray_session.check_fits("x", 1.0, 1.0, "s")  # a cluster may still add a GPU node: no error

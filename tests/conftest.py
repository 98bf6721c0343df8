"""Shared fixtures: bundled sample data and one tiny offline model per test session."""

from __future__ import annotations

import os
from pathlib import Path

# Before any library import: quiet, deterministic, offline.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Serve tests turn bearer auth on with this variable (serve.auth_token_env); set before Ray
# starts so that replicas inherit it.
os.environ["STEPER_TEST_API_TOKEN"] = "test-token"

from collections.abc import Iterator

import pytest

from steper_ray.config import TinyModelConfig
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.data.records import Passage, QuestionRecord

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need Ray Serve (the ``serve_url`` fixture) run last, in their own order.

    Serve's controller and HTTP proxy stay up from the first such test to the end of the run
    (a session fixture) and take CPU from every test after it: on 2 cores, ahead of them all."""
    items.sort(key=lambda item: "serve_url" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def musique_dev() -> list[QuestionRecord]:
    return read_dataset("sample:musique/dev.jsonl").records


@pytest.fixture(scope="session")
def musique_corpus(musique_dev: list[QuestionRecord]) -> list[Passage]:
    return extract_corpus(musique_dev)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from steper_ray.models.tiny import build_tiny_llama

    records = read_dataset("sample:hotpotqa/dev.jsonl", limit=10).records
    texts = [p.text for p in extract_corpus(records)] + [r.question for r in records]
    return build_tiny_llama(texts, tmp_path_factory.mktemp("tiny") / "model", TinyModelConfig())


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the whole test run."""
    import ray

    # metrics exported every 2 s instead of Ray's 10 s: the Prometheus test waits for them
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 2000})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_session: None) -> Iterator[str]:
    """Serve's HTTP proxy on a free local port, once per test run."""
    import socket

    from ray import serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


# --- a small finished run, written from plain data (the run report's tests) -----------------
REPORT_SCRIPT_TEXT = 'It says <script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 2"> here.'


def _report_passages() -> dict[str, Passage]:
    return {key: Passage.make(title, text) for key, (title, text) in {
        "founded": ("Lakeside Glassworks", "Lakeside Glassworks was founded in 1891 by Marta Velde."),
        "born": ("Marta Velde", "Marta Velde (1862 - 1930) was born in Bergen, Norway."),
        "script": ("Markup & co", REPORT_SCRIPT_TEXT),
        "river": ("Tessa (river)", "The Tessa is a river 312 kilometres long."),
    }.items()}


def build_report_run(root: Path) -> dict[str, object]:
    """A finished pipeline run under ``root/run`` (every stage's summary, traces, metrics,
    predictions, indexes' passages) and what the report of it must show: ``run``, ``p`` (the
    passages by key), ``questions`` (how many the trace browser holds), ``script_text`` (a
    passage's text with markup that must stay text)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from steper_ray.config import dump_config, load_config
    from steper_ray.generate.store import TRACE_SCHEMA

    run = root / "run"
    p = _report_passages()
    data = root / "data"
    data.mkdir(parents=True)

    def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    def summary(folder: Path, content: dict[str, object]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(content))

    def passages(folder: Path, keys: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{"id": p[k].id, "title": p[k].title, "text": p[k].text} for k in keys]),
                       folder / "passages.parquet")

    train = jsonl(data / "train.jsonl", [
        {"id": "q1", "question": "Where was the founder of Lakeside Glassworks born?", "answers": ["Norway"],
         "gold_ids": [p["founded"].id, p["born"].id]},
        {"id": "q2", "question": "How long is the Tessa?", "answers": ["312 kilometres"], "gold_ids": [p["river"].id]},
        {"id": "q3", "question": "Which river joins the Tessa near <b>Holm</b>?", "answers": ["Quarn"],
         "gold_ids": [p["river"].id]},
    ])
    other = jsonl(data / "other.jsonl", [{"id": "q4", "question": "Who built the bridge?", "answers": ["Ada"]}])
    dev = jsonl(data / "dev.jsonl", [
        {"id": "d1", "question": "In which country was Marta Velde born?", "answers": ["Norway"],
         "gold_ids": [p["born"].id]},
        {"id": "d2", "question": "In which city was Marta Velde born?", "answers": ["Bergen"], "gold_ids": [p["born"].id]},
    ])
    cfg = load_config(None, [
        f"run_dir={run}", "evaluate.baseline=true",
        f"data.train=[{{name: toy, path: '{train}', format: jsonl}}, {{name: other, path: '{other}', format: jsonl}}]",
        f"data.dev=[{{name: dv, path: '{dev}', format: jsonl}}]",
    ])
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    passages(run / "index/train", ["founded", "born", "script", "river"])
    passages(run / "index/dv", ["founded", "born"])

    def step(n: int, task: str, query: str, keys: list[str], output: str, tokens: int) -> dict[str, object]:
        return {"step": n, "task": task, "query": query, "retrieved_ids": [p[k].id for k in keys], "prompt": "...",
                "student_prompt": "...", "output": output, "num_tokens": tokens, "num_passages": len(keys),
                "new_passages": len(keys), "attempts": 1, "notes": []}

    def trace(qid: str, ds: str, question: str, answers: list[str], answer: str | None, reason: str | None,
              steps: list[dict[str, object]]) -> dict[str, object]:
        return {"question_id": qid, "dataset": ds, "question": question, "answers": answers, "answer": answer,
                "final_output": "", "kept": reason is None, "drop_reason": reason,
                "error": reason if reason and reason.startswith("error") else None, "failure": None,
                "num_steps": len(steps), "num_tokens": sum(int(s["num_tokens"]) for s in steps),  # type: ignore[call-overload]
                "passage_ids": [], "steps": steps}

    traces = [
        trace("q1", "toy", "Where was the founder of Lakeside Glassworks born?", ["Norway"], "Norway", None, [
            step(1, "init", "Where was the founder of Lakeside Glassworks born?", ["founded", "script"],
                 "Lakeside Glassworks was founded by Marta Velde.", 11),
            step(2, "exp", "Lakeside Glassworks was founded by Marta Velde.", ["born", "river"],
                 "Marta Velde was born in Bergen, Norway.", 10),
            step(3, "agg", "Marta Velde was born in Bergen, Norway.", ["born"], "So the answer is: Norway.", 7)]),
        trace("q2", "toy", "How long is the Tessa?", ["312 kilometres"], "312 kilometres", None, [
            step(1, "init", "How long is the Tessa?", ["river"], "The Tessa is 312 kilometres long.", 9),
            step(2, "agg", "The Tessa is 312 kilometres long.", ["river"], "So the answer is: 312 kilometres.", 8)]),
        trace("q3", "toy", "Which river joins the Tessa near <b>Holm</b>?", ["Quarn"], "Holm",
              "wrong answer (contains)", [
                  step(1, "init", "Which river joins the Tessa near Holm?", ["river", "script"], "So the answer is: Holm.", 6)]),
        trace("q4", "other", "Who built the bridge?", ["Ada"], None,
              'error: prompt has 5000 tokens <img src=x onerror="window.__pwned = 3">', []),
    ]
    (run / "generate/traces").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(traces, schema=TRACE_SCHEMA), run / "generate/traces/part-00000-0a1b2c3d.parquet")
    summary(run / "generate", {"command": "generate", "teacher": "evidence", "teacher_model": None, "questions": 4,
                               "kept": 2, "dropped": 2, "dropped_by_reason": {"wrong answer": 1, "error": 1},
                               "examples_per_task": {"init": 2, "exp": 1, "agg": 2}, "seconds": 12.25})
    summary(run / "index", {"kind": "bm25", "datasets": {"dv": {"passages": 2}}, "seconds": 1.5})
    summary(run / "retrieval_eval", {"metrics": {"dv": {"questions": 2, "unanswerable_not_scored": 0,
                                                        "recall@2": 0.75, "recall@4": 1.0}}, "seconds": 0.5})
    rows = [{"step": s, "loss_init": 3.0 / s, "sigma_init": 1.0 + s / 100, "loss_exp": 2.0 / s, "sigma_exp": 1.0,
             "loss_agg": 1.0 / s, "sigma_agg": 1.0 - s / 100} for s in (1, 2, 3)]
    metrics = [rows[0], {**rows[1], "loss_init": 99.0}, rows[1], rows[2]]  # step 2 logged again after a resume
    jsonl(run / "train/metrics.jsonl", metrics)  # type: ignore[arg-type]
    final = {k: v for k, v in rows[2].items() if k != "step"}
    summary(run / "train", {"command": "train", "loss_mode": "steper", "steps": 3, "examples_used": 5,
                            "final": final, "model": str(run / "train/model"), "plot": str(run / "train/sigmas.png"),
                            "seconds": 40.0})

    def evaluation(folder: Path, label: str, preds: list[tuple[str, str, str | None, float]], m: dict[str, float]) -> None:
        rows = []
        for qid, question, prediction, acc in preds:
            gold = "Norway" if qid == "d1" else "Bergen"
            rows.append({"question_id": qid, "dataset": "dv", "question": question, "answers": [gold],
                         "prediction": prediction, "marked": prediction is not None, "em": acc, "f1": acc,
                         "acc": acc, "recall": 1.0, "num_steps": 2, "num_tokens": 40,
                         "steps": [{"step": 1, "task": "init", "query": question, "passage_ids": [p["born"].id],
                                    "reasoning": "Marta Velde was born in Bergen, Norway.", "num_tokens": 20,
                                    "notes": []},
                                   {"step": 2, "task": "agg", "query": "Marta Velde was born in Bergen, Norway.",
                                    "passage_ids": [p["founded"].id, p["born"].id],
                                    "reasoning": f"So the answer is: {prediction}.", "num_tokens": 20,
                                    "notes": ["truncated"]}],
                         "error": None, "failure": None})
        jsonl(folder / "predictions/dv.jsonl", rows)
        summary(folder, {"command": "evaluate", "label": label, "model": {"kind": "hf"}, "seconds": 8.0,
                         "metrics": {"dv": {"questions": 2, "errors": 0, "failures": 0, "mean_steps": 2.0,
                                            "tokens_per_question": 40.0, "recall": 1.0, **m}},
                         "report": str(folder / "report/comparison.md"), "plot": str(folder / "report/comparison.png")})

    evaluation(run / "evaluate_base", "student before training (zero-shot)",
               [("d1", "In which country was Marta Velde born?", "Sweden", 0.0),
                ("d2", "In which city was Marta Velde born?", None, 0.0)],
               {"em": 0.0, "f1": 0.0, "acc": 0.0, "marked": 0.5})
    evaluation(run / "evaluate", "student after training (steper)",
               [("d1", "In which country was Marta Velde born?", "Norway", 1.0),
                ("d2", "In which city was Marta Velde born?", "Oslo", 0.0)],
               {"em": 0.5, "f1": 0.625, "acc": 0.5, "marked": 1.0})
    stages = [("index", 1.5), ("retrieval_eval", 0.5), ("generate", 12.25), ("evaluate_base", 8.0),
              ("train", 40.0), ("evaluate", 8.0)]
    summary(run, {"command": "pipeline", "run_dir": str(run), "wall_s": 70.25,
                  "stages": [{"stage": s, "status": "done", "seconds": t} for s, t in stages]})
    return {"run": run, "p": p, "questions": 8, "script_text": REPORT_SCRIPT_TEXT}


@pytest.fixture
def report_run(tmp_path: Path) -> dict[str, object]:
    """A finished run to report on (``build_report_run``)."""
    return build_report_run(tmp_path)

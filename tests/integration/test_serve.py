"""The Serve application on CPU: a tiny Llama on transformers, a BM25 index over real MuSiQue
paragraphs, the retriever as its own deployment, bearer auth on."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from steper_ray.config import BM25Config, GeneratorConfig, load_config
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.retrieval import load_index
from steper_ray.retrieval.bm25 import BM25Retriever
from steper_ray.serve.service import AnswerService

APP = "steper-test"
AUTH = {"Authorization": "Bearer test-token"}
QUESTION = "Who founded the company that distributed the film UHF?"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, serve_url: str) -> Iterator[dict[str, Any]]:
    from ray import serve

    from steper_ray.serve.app import build_app

    root = tmp_path_factory.mktemp("serve")
    index = root / "index"
    records = read_dataset("sample:musique/dev.jsonl").records
    BM25Retriever.build(extract_corpus(records), BM25Config()).save(index)
    cfg = load_config(None, [
        f"run_dir={root}", f"serve.index={index}", "serve.model.kind=hf", f"serve.model.model={tiny_model_dir}",
        "serve.model.max_tokens=12", "reasoning.max_steps=3", "retrieval.k=3",
        "serve.auth_token_env=STEPER_TEST_API_TOKEN", "serve.retriever_timeout_s=3",
        "serve.retriever.num_cpus=0", "serve.retriever.autoscaling.min_replicas=2",
        "serve.retriever.autoscaling.max_replicas=3", "serve.retriever.max_ongoing_requests=7",
        "serve.reasoner.autoscaling.target_ongoing_requests=3",
    ])
    serve.run(build_app(cfg), name=APP, route_prefix="/")
    with httpx.Client(base_url=serve_url, timeout=120) as client:
        yield {"client": client, "cfg": cfg, "index": index, "model": tiny_model_dir}
    serve.delete(APP)


def _post(served: dict[str, Any], body: Any, path: str = "/v1/answer", headers: dict[str, str] = AUTH) -> httpx.Response:
    return served["client"].post(path, json=body, headers=headers)


def test_answers_with_the_same_loop_as_in_process(served: dict[str, Any]) -> None:
    r = _post(served, {"question": QUESTION})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["latency_ms"] > 0
    assert 1 <= len(body["steps"]) <= 3 and body["steps"][0]["query"] == QUESTION
    assert all(len(s["passages"]) == 3 and all(p["title"] for p in s["passages"]) for s in body["steps"])
    # The endpoint runs the StepwiseReasoner the evaluation runs: same greedy steps, same hits.
    generator = build_generator(GeneratorConfig(kind="hf", model=str(served["model"]), max_tokens=12))
    local = AnswerService(load_index(served["index"]), generator).answer(QUESTION, max_steps=3, k=3)
    assert [(s["query"], s["passages"], s["reasoning"]) for s in body["steps"]] == \
        [(s["query"], s["passages"], s["reasoning"]) for s in local["steps"]]
    assert body["answer"] == local["answer"]

    # per-request k and max_steps are honoured
    small = _post(served, {"question": QUESTION, "k": 1, "max_steps": 2}).json()
    assert len(small["steps"]) <= 2 and all(len(s["passages"]) == 1 for s in small["steps"])


def test_concurrent_requests_are_all_answered(served: dict[str, Any]) -> None:
    # More requests in flight than a default thread pool has threads (min(32, cpus + 4)): the
    # loops block on batched engine calls and must not starve them.
    from concurrent.futures import ThreadPoolExecutor

    questions = [r.question for r in read_dataset("sample:musique/dev.jsonl", limit=12).records]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda q: _post(served, {"question": q, "timeout_s": 50}), questions))
    assert [r.status_code for r in responses] == [200] * 12
    assert [r.json()["steps"][0]["query"] for r in responses] == questions


def test_streams_each_step_then_the_answer(served: dict[str, Any]) -> None:
    events = []
    with served["client"].stream("POST", "/v1/answer/stream", json={"question": QUESTION}, headers=AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "answer" and set(kinds[:-1]) == {"step"} and len(kinds) >= 2
    final = events[-1][1]
    assert [d for _, d in events[:-1]] == final["steps"]
    assert final["steps"] == _post(served, {"question": QUESTION}).json()["steps"]


@pytest.mark.parametrize(("body", "status", "message"), [
    (None, 400, "not valid JSON"),
    ({"k": 2}, 422, "question: Field required"),
    ({"question": "   "}, 422, "question: is empty"),
    ({"question": "x" * 1001}, 422, "over the limit of 1000"),
    ({"question": "q", "k": 0}, 422, "k: must be between 1 and 20, got 0"),
    ({"question": "q", "k": "many"}, 422, "k: Input should be a valid integer"),
    ({"question": "q", "max_steps": 1}, 422, "max_steps: must be between 2 and 8"),
    ({"question": "q", "max_steps": 50, "k": 99}, 422, "max_steps: must be between 2 and 8, got 50; k: must be"),
    ({"question": "q", "timeout_s": 1000}, 422, "timeout_s: must be above 0 and at most 60"),
    ({"question": "q", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    (["a", "list"], 422, "invalid request"),
])
def test_bad_requests_get_a_4xx_that_says_what_to_fix(served: dict[str, Any], body: Any, status: int, message: str) -> None:
    for path in ("/v1/answer", "/v1/answer/stream"):
        if body is None:
            r = served["client"].post(path, content=b'{"question": "unterminated',
                                      headers={**AUTH, "content-type": "application/json"})
        else:
            r = _post(served, body, path)
        assert r.status_code == status, r.text
        assert message in r.json()["detail"]


def test_a_body_not_sent_as_json_gets_415_saying_what_to_send(served: dict[str, Any]) -> None:
    for path in ("/v1/answer", "/v1/answer/stream"):
        r = served["client"].post(path, content=b'{"question": "Who directed Jaws?"}',
                                  headers={**AUTH, "content-type": "text/plain"})
        assert r.status_code == 415, r.text
        assert "Content-Type: application/json" in r.json()["detail"]


def test_bearer_auth(served: dict[str, Any]) -> None:
    assert _post(served, {"question": QUESTION}, headers={}).status_code == 401
    r = _post(served, {"question": QUESTION}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert _post(served, {"question": QUESTION}, "/v1/answer/stream", headers={}).status_code == 401
    # liveness and the schema stay open (probes and clients need them)
    assert served["client"].get("/healthz").json() == {"status": "ok"}
    schema = served["client"].get("/openapi.json").json()
    assert {"/v1/answer", "/v1/answer/stream", "/healthz"} <= set(schema["paths"])
    assert "question" in schema["components"]["schemas"]["AnswerRequest"]["properties"]


def test_request_over_its_time_limit_gets_504(served: dict[str, Any]) -> None:
    r = _post(served, {"question": QUESTION, "timeout_s": 0.001})
    assert r.status_code == 504 and "time limit" in r.json()["detail"]
    assert _post(served, {"question": QUESTION}).status_code == 200  # nothing left broken


def test_autoscaling_config_reaches_the_deployments(served: dict[str, Any]) -> None:
    from ray import serve
    from ray.serve.context import _get_global_client

    status = serve.status().applications[APP].deployments
    assert set(status) == {"retriever", "reasoner", "ingress"}
    assert status["retriever"].replica_states.get("RUNNING") == 2  # min_replicas
    details = _get_global_client().get_serve_details()["applications"][APP]["deployments"]
    retriever = details["retriever"]["deployment_config"]
    assert retriever["autoscaling_config"]["min_replicas"] == 2
    assert retriever["autoscaling_config"]["max_replicas"] == 3
    assert retriever["max_ongoing_requests"] == 7
    assert retriever["ray_actor_options"]["num_cpus"] == 0
    assert details["reasoner"]["deployment_config"]["autoscaling_config"]["target_ongoing_requests"] == 3


def test_retriever_down_gives_503_and_the_service_recovers(served: dict[str, Any]) -> None:
    import ray

    index: Path = served["index"]
    away = index.with_name("index.away")
    os.rename(index, away)  # a replacement replica cannot load the index: the retriever stays down
    try:
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if f"{APP}#retriever#" in actor["name"]:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        r = _post(served, {"question": QUESTION})
        assert r.status_code == 503, r.text
        assert "retriever deployment" in r.json()["detail"]
    finally:
        os.rename(away, index)
    deadline = time.time() + 120
    while time.time() < deadline:
        r = _post(served, {"question": QUESTION})
        if r.status_code == 200:
            break
        assert r.status_code == 503, r.text
        time.sleep(1)
    assert r.status_code == 200, "the service did not recover after the retriever came back"


def test_shipped_serve_config_builds_this_app(served: dict[str, Any]) -> None:
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from steper_ray.serve import app as app_module

    repo = Path(__file__).resolve().parents[2]
    for path in sorted((repo / "jobs" / "serve").glob("*.yaml")):
        import yaml

        schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
        for application in schema.applications:
            module, _, attr = application.import_path.partition(":")
            assert module == app_module.__name__ and getattr(app_module, attr) is app_module.app_builder
            assert (repo / application.args["config"]).is_file()
            load_config(repo / application.args["config"], list(application.args.get("overrides") or []))
            # what `serve run` / `serve deploy` call, here pointed at this test's model and index
            built = app_module.app_builder({**application.args, "overrides": [
                f"serve.index={served['index']}", "serve.model.kind=hf", f"serve.model.model={served['model']}"]})
            assert isinstance(built, Application)
    assert list((repo / "jobs" / "serve").glob("*.yaml")), "no shipped Serve config"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_async_engine_serves_the_same_steps_as_in_process_vllm(served: dict[str, Any]) -> None:
    pytest.importorskip("vllm")
    from ray import serve

    from steper_ray.serve.app import build_app

    cfg = served["cfg"]
    vllm_model = {"kind": "vllm", "model": str(served["model"]), "max_tokens": 12, "max_model_len": 2048}
    app_cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={
        "model": GeneratorConfig(**vllm_model), "auth_token_env": None,
        "retriever": cfg.serve.retriever.model_copy(update={"autoscaling": cfg.serve.retriever.autoscaling.model_copy(update={"min_replicas": 1})}),
    })})
    serve.run(build_app(app_cfg), name="steper-vllm", route_prefix="/vllm")
    try:
        questions = [r.question for r in read_dataset("sample:musique/dev.jsonl", limit=4).records]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:  # in flight together: the engine batches them
            bodies = list(pool.map(lambda q: served["client"].post("/vllm/v1/answer", json={"question": q}), questions))
        assert [b.status_code for b in bodies] == [200] * 4
        from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator

        local = AnswerService(load_index(served["index"]), VLLMGenerator(str(served["model"]), max_tokens=12, max_model_len=2048))
        for q, b in zip(questions, bodies):
            expected = local.answer(q, max_steps=3, k=3)
            assert [s["reasoning"] for s in b.json()["steps"]] == [s["reasoning"] for s in expected["steps"]]
    finally:
        serve.delete("steper-vllm")


def test_serve_command_without_a_trained_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steper_ray.cli import main

    assert main(["serve", f"run_dir={tmp_path}", f"serve.index={tmp_path}"]) == 2
    assert "is not a complete index" in capsys.readouterr().err
    records = read_dataset("sample:musique/dev.jsonl", limit=3).records
    BM25Retriever.build(extract_corpus(records), BM25Config()).save(tmp_path / "index")
    assert main(["serve", f"run_dir={tmp_path}", f"serve.index={tmp_path / 'index'}"]) == 2
    assert "no model at" in capsys.readouterr().err
    assert main(["serve", f"serve.index={tmp_path / 'index'}", "serve.model.kind=evidence"]) == 2
    assert "cannot answer new questions" in capsys.readouterr().err

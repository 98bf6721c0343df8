"""The Serve application on CPU: a tiny Llama on transformers, a two-shard BM25 index over real
MuSiQue paragraphs, each shard's retriever its own deployment, bearer auth on. Both APIs (steper's and the
OpenAI-compatible one, through the official ``openai`` client), the faults fuzzing found, and
the application metrics on Ray's Prometheus endpoint (this module's tests run in file order:
the metrics test checks the counters against every response the module's clients saw)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from steper_ray.config import GeneratorConfig, IndexConfig, load_config
from steper_ray.data import extract_corpus, read_dataset
from steper_ray.reasoning.generators.factory import build_generator
from steper_ray.retrieval import build_index, load_index
from steper_ray.serve.service import AnswerService

APP = "steper-test"
AUTH = {"Authorization": "Bearer test-token"}
QUESTION = "Who founded the company that distributed the film UHF?"
FUZZ_EXAMPLES = 25  # schemathesis examples per operation and mode (positive, negative)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, serve_url: str) -> Iterator[dict[str, Any]]:
    from ray import serve

    from steper_ray.serve.app import build_app

    root = tmp_path_factory.mktemp("serve")
    index = root / "index"
    records = read_dataset("sample:musique/dev.jsonl").records
    # two shards: one retriever replica group each, merged by the reasoner (the in-process
    # loop the answers are compared with searches both shards in one process)
    build_index(extract_corpus(records), IndexConfig(shards=2)).save(index)
    cfg = load_config(None, [
        f"run_dir={root}", f"serve.index={index}", "serve.model.kind=hf", f"serve.model.model={tiny_model_dir}",
        "serve.model.max_tokens=12", "reasoning.max_steps=3", "retrieval.k=3",
        "serve.auth_token_env=STEPER_TEST_API_TOKEN", "serve.retriever_timeout_s=3",
        "serve.retriever.num_cpus=0", "serve.retriever.autoscaling.min_replicas=1",
        "serve.retriever.autoscaling.max_replicas=3", "serve.retriever.max_ongoing_requests=7",
        "serve.reasoner.autoscaling.target_ongoing_requests=3",
    ])
    serve.run(build_app(cfg), name=APP, route_prefix="/")
    seen: Counter[tuple[str, int]] = Counter()  # (path, status) of every response this module got

    def tally(response: httpx.Response) -> None:
        seen[(response.request.url.path, response.status_code)] += 1

    with httpx.Client(base_url=serve_url, timeout=120, event_hooks={"response": [tally]}) as client:
        yield {"client": client, "cfg": cfg, "index": index, "model": tiny_model_dir, "seen": seen, "url": serve_url,
               "tally": tally}
    serve.delete(APP)


def _post(served: dict[str, Any], body: Any, path: str = "/v1/answer", headers: dict[str, str] = AUTH) -> httpx.Response:
    return served["client"].post(path, json=body, headers=headers)


def test_answers_with_the_same_loop_as_in_process(served: dict[str, Any]) -> None:
    r = _post(served, {"question": QUESTION})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["latency_ms"] > 0
    assert 1 <= len(body["steps"]) <= 3 and body["steps"][0]["query"] == QUESTION
    # where the loop's time went: retrieval (the retriever deployment's calls) and the engine, within the loop
    timing = {m.split(";")[0]: float(m.split(";dur=")[1].split(";")[0]) for m in r.headers["server-timing"].split(", ")}
    assert timing["loop"] == body["latency_ms"]
    assert timing["search"] > 0 and timing["generate"] > 0 and timing["search"] + timing["generate"] <= timing["loop"]
    # BM25 returns only passages that hold a word of the query: k for the question, at most k for
    # a later step's query (the random model's sentence may share no word with any passage)
    assert len(body["steps"][0]["passages"]) == 3
    assert all(len(s["passages"]) <= 3 and all(p["title"] for p in s["passages"]) for s in body["steps"])
    # The endpoint runs the StepwiseReasoner the evaluation runs: same greedy steps, same hits.
    generator = build_generator(GeneratorConfig(kind="hf", model=str(served["model"]), max_tokens=12))
    local = AnswerService(load_index(served["index"]), generator).answer(QUESTION, max_steps=3, k=3)
    assert [(s["query"], s["passages"], s["reasoning"]) for s in body["steps"]] == \
        [(s["query"], s["passages"], s["reasoning"]) for s in local["steps"]]
    assert body["answer"] == local["answer"]

    # per-request k and max_steps are honoured
    small = _post(served, {"question": QUESTION, "k": 1, "max_steps": 2}).json()
    assert len(small["steps"]) <= 2 and len(small["steps"][0]["passages"]) == 1
    assert all(len(s["passages"]) <= 1 for s in small["steps"])


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
    (["a", "list"], 422, "the request body must be a JSON object (this one is an array)"),
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
    # the scheme in any case (RFC 7235); the token before the body: no token, no parsing
    assert _post(served, {"question": QUESTION}, headers={"Authorization": "bearer test-token"}).status_code == 200
    for body in (b"{not json", b"x" * 2_000_000):
        r = served["client"].post("/v1/answer", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 401, r.text
    r = served["client"].post("/v1/answer", content=b"x" * 2_000_000, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 1048576 bytes" in r.json()["detail"]
    r = served["client"].post("/v1/answer", content=b'{"question": "caf\xe9?"}',
                              headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "not valid UTF-8" in r.json()["detail"]
    # liveness and the schema stay open (probes and clients need them)
    assert served["client"].get("/healthz").json() == {"status": "ok"}
    schema = served["client"].get("/openapi.json").json()
    assert {"/v1/answer", "/v1/answer/stream", "/healthz", "/v1/models", "/v1/chat/completions"} <= set(schema["paths"])
    question = schema["components"]["schemas"]["AnswerRequest"]["properties"]["question"]
    assert (question["minLength"], question["maxLength"]) == (1, 1000)  # from serve.max_question_chars
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_request_over_its_time_limit_gets_504(served: dict[str, Any]) -> None:
    r = _post(served, {"question": QUESTION, "timeout_s": 0.001})
    assert r.status_code == 504 and "time limit" in r.json()["detail"]
    assert _post(served, {"question": QUESTION}).status_code == 200  # nothing left broken
    events = _events(served, {"question": QUESTION, "timeout_s": 0.001})  # the stream: one error event
    assert events == [("error", {"status": 504, "detail": "the request ran past its time limit of 0.001 s"})]


def _events(served: dict[str, Any], body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    events, name = [], None
    with served["client"].stream("POST", "/v1/answer/stream", json=body, headers=AUTH) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def test_a_lone_surrogate_is_refused_and_good_requests_beside_it_are_answered(served: dict[str, Any]) -> None:
    # Concurrent requests share transformers batches: the one that cannot be tokenised must
    # cost only itself (422 at the edge; and the engine isolates a bad prompt too).
    bad = b'{"question": "Who founded \\ud800 the company?"}'
    questions = [r.question for r in read_dataset("sample:musique/dev.jsonl", limit=12).records]

    def send(i: int) -> httpx.Response:
        if i % 4 == 3:
            path = "/v1/answer/stream" if i % 8 == 7 else "/v1/answer"
            return served["client"].post(path, content=bad, headers={**AUTH, "content-type": "application/json"})
        return _post(served, {"question": questions[i % len(questions)]})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(16)))
    assert [r.status_code for r in responses] == [422 if i % 4 == 3 else 200 for i in range(16)]
    assert all("unpaired UTF-16 surrogate" in r.json()["detail"] for r in responses[3::4])
    chat = served["client"].post("/v1/chat/completions", headers={**AUTH, "content-type": "application/json"},
                                 content=b'{"model": "steper-student", "messages": [{"role": "user", "content": "\\udfff"}]}')
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages.0.content"


def test_openai_client_sync_async_and_streaming_give_the_answer_of_v1_answer(served: dict[str, Any]) -> None:
    import openai

    native = _post(served, {"question": QUESTION}).json()
    client = openai.OpenAI(base_url=f"{served['url']}/v1", api_key="test-token", max_retries=0,
                           http_client=httpx.Client(timeout=120, event_hooks={"response": [served["tally"]]}))
    assert [m.id for m in client.models.list()] == ["steper-student"]
    done = client.chat.completions.create(model="steper-student", messages=[{"role": "user", "content": QUESTION}])
    message = done.choices[0].message
    assert message.content == native["answer"]
    assert message.reasoning_content == "\n".join(s["reasoning"] for s in native["steps"])  # type: ignore[attr-defined]
    assert done.model_extra["steper"]["steps"] == native["steps"]  # type: ignore[index]
    assert done.usage is not None and done.usage.completion_tokens == native["usage"]["completion_tokens"] > 0

    chunks = list(client.chat.completions.create(model="steper-student", stream=True,
                                                 messages=[{"role": "user", "content": QUESTION}]))
    reasoning = [c.choices[0].delta.reasoning_content for c in chunks  # type: ignore[attr-defined]
                 if getattr(c.choices[0].delta, "reasoning_content", None)]
    assert len(reasoning) == len(native["steps"])  # one delta per step
    assert "".join(reasoning) == message.reasoning_content
    assert chunks[-1].choices[0].delta.content == native["answer"] and chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="steper-student", messages=[{"role": "user", "content": "q"}],
                                       logprobs=True)
    assert info.value.param == "logprobs"

    async def use_async() -> str | None:
        async with httpx.AsyncClient(timeout=120, event_hooks={"response": [_async(served["tally"])]}) as http:
            aclient = openai.AsyncOpenAI(base_url=f"{served['url']}/v1", api_key="test-token", http_client=http)
            out = await aclient.chat.completions.create(model="steper-student",
                                                        messages=[{"role": "user", "content": QUESTION}])
            return out.choices[0].message.content

    assert asyncio.run(use_async()) == native["answer"]


def _async(hook: Any) -> Any:
    async def run(response: httpx.Response) -> None:
        hook(response)

    return run


def test_autoscaling_config_reaches_the_deployments(served: dict[str, Any]) -> None:
    from ray import serve
    from ray.serve.context import _get_global_client

    status = serve.status().applications[APP].deployments
    shards = ["retriever-shard-0", "retriever-shard-1"]  # one replica group per shard of the index
    assert set(status) == {*shards, "reasoner", "ingress"}
    assert [status[name].replica_states.get("RUNNING") for name in shards] == [1, 1]  # min_replicas each
    details = _get_global_client().get_serve_details()["applications"][APP]["deployments"]
    for name in shards:
        retriever = details[name]["deployment_config"]
        assert retriever["autoscaling_config"]["min_replicas"] == 1
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
            if f"{APP}#retriever-shard-1#" in actor["name"]:  # one shard down is the retriever down
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        r = _post(served, {"question": QUESTION})
        assert r.status_code == 503, r.text
        assert "retriever deployment 'retriever-shard-1'" in r.json()["detail"]  # the shard is named
        r = served["client"].post("/v1/chat/completions", headers=AUTH, json={
            "model": "steper-student", "messages": [{"role": "user", "content": QUESTION}]})
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
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


def _metrics_text() -> str:
    import ray

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


def _scrape(app: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Ray's Prometheus endpoint on this node: each sample of ``app``, summed over replicas, by
    (name, its route / status / le labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(_metrics_text()):
        for sample in family.samples:
            if sample.labels.get("application") != app:
                continue
            key = (sample.name, frozenset((k, v) for k, v in sample.labels.items() if k in ("route", "status", "le")))
            out[key] = out.get(key, 0.0) + sample.value
    return out


def _settled_scrape(app: str, quiet_s: float = 7.0, limit_s: float = 120.0) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A scrape once ``app``'s samples stopped moving for ``quiet_s`` (longer than Ray's export
    interval): requests of earlier tests that were still finishing (a 504 ends its loop at the
    next step) are counted before, not inside, the window a test measures."""
    def ours() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        # Serve's own gauges of the app (queue lengths, health checks) move while it is idle
        return {key: v for key, v in _scrape(app).items() if key[0].startswith("ray_steper_")}

    last, since, start = ours(), time.time(), time.time()
    while time.time() - since < quiet_s and time.time() - start < limit_s:
        time.sleep(1)
        now = ours()
        if now != last:
            last, since = now, time.time()
    if time.time() - start >= limit_s:
        raise AssertionError(f"{app}'s steper metrics still moved after {limit_s:.0f} s")
    return last


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_on_rays_prometheus_endpoint_count_what_happened(served: dict[str, Any]) -> None:
    # After the tests above (the retriever outage's 503s included): every response this
    # module's clients got is counted by route and status; then a few requests of known shape
    # move the loop's histograms and the token counter by exactly what they did.
    before = _settled_scrape(APP)
    bodies = [_post(served, {"question": q}).json() for q in (QUESTION, "Who directed the film UHF?")]
    chat = served["client"].post("/v1/chat/completions", headers=AUTH, json={
        "model": "steper-student", "messages": [{"role": "user", "content": QUESTION}]}).json()
    streamed = _events(served, {"question": QUESTION})[-1][1]
    finished = [*bodies, {"steps": chat["steper"]["steps"], "usage": chat["usage"]}, streamed]
    steps = sum(len(b["steps"]) for b in finished)
    tokens = sum(b["usage"]["completion_tokens"] for b in finished)
    expected = {(path, status): n for (path, status), n in served["seen"].items() if path.startswith("/v1/")}
    assert expected.get(("/v1/answer", 503), 0) >= 1 and expected.get(("/v1/answer", 504), 0) >= 1

    deadline = time.time() + 90  # Ray exports metrics every few seconds
    while True:
        after = _scrape(APP)
        got = {key: _value(after, "ray_steper_requests_total", route=key[0], status=str(key[1])) for key in expected}
        loop = {
            "steps": _value(after, "ray_steper_steps_per_request_count") - _value(before, "ray_steper_steps_per_request_count"),
            "steps_sum": _value(after, "ray_steper_steps_per_request_sum") - _value(before, "ray_steper_steps_per_request_sum"),
            "retrievals": _value(after, "ray_steper_retrieval_latency_ms_count")
            - _value(before, "ray_steper_retrieval_latency_ms_count"),
            "generations": _value(after, "ray_steper_generation_latency_ms_count")
            - _value(before, "ray_steper_generation_latency_ms_count"),
            "tokens": _value(after, "ray_steper_tokens_generated_total") - _value(before, "ray_steper_tokens_generated_total"),
        }
        want = {"steps": len(finished), "steps_sum": steps, "retrievals": steps, "generations": steps, "tokens": tokens}
        if (got == expected and loop == want) or time.time() > deadline:
            break
        time.sleep(2)
    assert got == expected
    assert loop == want
    timeouts = sum(n for (path, status), n in expected.items() if status == 504)
    unavailable = sum(n for (path, status), n in expected.items() if status == 503)
    stream_timeouts = 1  # test_request_over_its_time_limit_gets_504's stream: a 200 whose last event is the 504
    assert sum(v for (name, _), v in after.items() if name == "ray_steper_timeouts_total") == timeouts + stream_timeouts
    assert sum(v for (name, _), v in after.items() if name == "ray_steper_unavailable_total") == unavailable
    assert _value(after, "ray_steper_retrieval_latency_ms_bucket", le="+Inf") >= steps


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation_on_the_running_app(served: dict[str, Any]) -> None:
    import schemathesis
    from api_fuzz import fuzz

    schema = schemathesis.openapi.from_url(f"{served['url']}/openapi.json")
    report = fuzz(schema, max_examples=FUZZ_EXAMPLES, headers=AUTH, call_kwargs={"timeout": 120})
    print(json.dumps(report.summary(), indent=1))  # the figures the README quotes (pytest -s)
    assert report.server_errors == [], report.server_errors[:5]
    assert report.schema_violations == [], report.schema_violations[:5]
    assert report.other_failures == [], report.other_failures[:5]
    assert {op for op, n in report.examples.items() if n == FUZZ_EXAMPLES} >= {
        f"POST {path} {mode}" for path in ("/v1/answer", "/v1/answer/stream", "/v1/chat/completions")
        for mode in ("positive", "negative")}


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
        # the engine's own statistics, on Ray's Prometheus endpoint beside the application's
        deadline = time.time() + 60
        while "ray_vllm_generation_tokens" not in (text := _metrics_text()) and time.time() < deadline:
            time.sleep(2)
        assert "ray_vllm_generation_tokens" in text and "ray_vllm_num_requests_running" in text
    finally:
        serve.delete("steper-vllm")


def test_serve_command_without_a_trained_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steper_ray.cli import main

    assert main(["serve", f"run_dir={tmp_path}", f"serve.index={tmp_path}"]) == 2
    assert "is not a complete index" in capsys.readouterr().err
    records = read_dataset("sample:musique/dev.jsonl", limit=3).records
    build_index(extract_corpus(records), IndexConfig()).save(tmp_path / "index")
    assert main(["serve", f"run_dir={tmp_path}", f"serve.index={tmp_path / 'index'}"]) == 2
    assert "no model at" in capsys.readouterr().err
    assert main(["serve", f"serve.index={tmp_path / 'index'}", "serve.model.kind=evidence"]) == 2
    assert "cannot answer new questions" in capsys.readouterr().err


def test_serve_runs_until_ctrl_c_then_deletes_its_application(served: dict[str, Any]) -> None:
    import signal

    from ray import serve

    from steper_ray.serve.app import run_serve

    url = f"{served['url']}/ctrl-c"
    port = int(served["url"].rsplit(":", 1)[1])
    cfg = served["cfg"]
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={
        "app_name": "ctrl-c", "route_prefix": "/ctrl-c", "host": "127.0.0.1", "port": port})})
    said: list[str] = []

    def announce(text: str) -> None:
        said.append(text)
        if "listening" in text:  # up and answering: now the user presses Ctrl-C
            assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    summary = run_serve(cfg, announce=announce)
    assert said == [f"steper-ray serve: listening on {url} (Ctrl-C to stop)",
                    "steper-ray serve: stopped (application 'ctrl-c' deleted)"]
    assert summary == {"command": "serve", "url": url, "app": "ctrl-c"}
    assert "ctrl-c" not in serve.status().applications and APP in serve.status().applications
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back

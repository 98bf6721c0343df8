"""The HTTP API over a fake backend, without Ray: both APIs' shapes and errors, the limits and
content types the OpenAPI schema declares, auth before the body, the body limits, the official
``openai`` client (sync, async, streaming), and a bounded schemathesis run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from steper_ray.reasoning.generators.protocol import Sampling
from steper_ray.serve.api import build_api
from steper_ray.serve.metrics import route_of
from steper_ray.serve.schemas import NOT_BLANK, Limits
from steper_ray.serve.service import AnswerSettings

TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "steper-student"
LIMITS = Limits(max_question_chars=1000, max_steps=8, max_k=20, max_timeout_s=60.0, default_steps=3,
                default_k=4, max_tokens=16)
STEPS = [
    {"step": 1, "task": "init", "query": "Capital of Norway?", "passages": [{"id": "p1", "title": "Norway"}],
     "reasoning": "Norway's capital is Oslo."},
    {"step": 2, "task": "agg", "query": "Norway's capital is Oslo.", "passages": [{"id": "p2", "title": "Oslo"}],
     "reasoning": "So the answer is: Oslo."},
]
ANSWER = {"answer": "Oslo", "steps": STEPS, "latency_ms": 12.5, "error": None,
          "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}}
TIMING = {"search_ms": 1.5, "generate_ms": 9.25}


class FakeBackend:
    """Answers every question with ANSWER; ``failure`` makes it fail with that kind instead
    (``mid_stream``: after the first step; ``raise_mid_stream``: by raising)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, AnswerSettings]] = []
        self.failure: str | None = None
        self.mid_stream = False
        self.raise_mid_stream = False

    async def answer(self, question: str, settings: AnswerSettings) -> dict[str, Any]:
        self.calls.append((question, settings))
        if self.failure:
            return {"failure": {"kind": self.failure, "message": f"{self.failure} happened"}}
        return {"data": ANSWER, "timing": TIMING}

    async def stream(self, question: str, settings: AnswerSettings) -> AsyncIterator[dict[str, Any]]:
        self.calls.append((question, settings))
        if self.failure and not self.mid_stream:
            yield {"event": "error", "data": {"kind": self.failure, "message": f"{self.failure} happened"}}
            return
        for step in STEPS:
            yield {"event": "step", "data": step}
            if self.raise_mid_stream:
                raise RuntimeError("replica died")
            if self.failure:
                yield {"event": "error", "data": {"kind": self.failure, "message": f"{self.failure} happened"}}
                return
            await asyncio.sleep(0)
        yield {"event": "answer", "data": ANSWER}


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.failures: list[tuple[str, int]] = []

    def request(self, route: str, status: int) -> None:
        self.requests.append((route, status))

    def failure(self, route: str, status: int) -> None:
        self.failures.append((route, status))


@pytest.fixture()
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture()
def metrics() -> Recorded:
    return Recorded()


@pytest.fixture()
def app(backend: FakeBackend, metrics: Recorded) -> Any:
    return build_api(LIMITS, backend, model_name=MODEL, token=TOKEN, max_body_bytes=4096, metrics=metrics)


@pytest.fixture()
def client(app: Any) -> TestClient:
    return TestClient(app)


def _chat(content: Any = "Capital of Norway?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def _sse(text: str) -> list[tuple[str | None, str]]:
    events, name = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, line[len("data: "):]))
            name = None
    return events


# --- the steper API ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ({"question": ""}, "question: is empty"),
    ({"question": " \n\t "}, "question: is empty"),
    ({"question": "\u200b\u200c \u200d\u2060\u180e\ufeff"}, "question: is empty (or only whitespace or invisible"),
    ({"question": "x" * 1001}, "question: has 1001 characters, over the limit of 1000"),
    ({"question": "q", "k": 0}, "k: must be between 1 and 20, got 0"),
    ({"question": "q", "k": "3"}, "k: Input should be a valid integer"),
    ({"question": "q", "k": True}, "k: Input should be a valid integer"),
    ({"question": "q", "max_steps": 9}, "max_steps: must be between 2 and 8, got 9"),
    ({"question": "q", "timeout_s": 0}, "timeout_s: must be above 0 and at most 60, got 0"),
    ({"question": "q", "timeout_s": 61.5}, "timeout_s: must be above 0 and at most 60, got 61.5"),
    ({"question": "q", "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_the_steper_api_refuses_what_its_schema_refuses_with_422(client: TestClient, body: dict[str, Any],
                                                                 message: str) -> None:
    for path in ("/v1/answer", "/v1/answer/stream"):
        r = client.post(path, json=body, headers=AUTH)
        assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_a_lone_surrogate_is_a_4xx_that_names_the_field_never_a_500(client: TestClient,
                                                                   backend: FakeBackend) -> None:
    raw = b'{"question": "Who founded \\ud800 it?"}'
    for path in ("/v1/answer", "/v1/answer/stream"):
        r = client.post(path, content=raw, headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert "question: contains an unpaired UTF-16 surrogate (U+D800 at character 12)" in r.json()["detail"]
    body = json.dumps(_chat("Who founded \ud800 it?")).encode()  # json.dumps escapes it: \\ud800
    r = client.post("/v1/chat/completions", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
    assert "unpaired UTF-16 surrogate" in r.json()["error"]["message"]
    assert backend.calls == []


def test_answer_and_stream_over_the_backend(client: TestClient, backend: FakeBackend) -> None:
    r = client.post("/v1/answer", json={"question": "  Capital of Norway?  ", "k": 2}, headers=AUTH)
    assert r.status_code == 200 and r.json() == ANSWER
    question, settings = backend.calls[-1]
    assert question == "Capital of Norway?"  # stripped
    assert settings == AnswerSettings(max_steps=3, k=2, timeout_s=60.0, sampling=Sampling())
    r = client.post("/v1/answer/stream", json={"question": "q", "timeout_s": 5}, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    assert [e for e, _ in events] == ["step", "step", "answer"]
    assert [json.loads(d) for _, d in events[:2]] == STEPS and json.loads(events[2][1]) == ANSWER
    assert backend.calls[-1][1].timeout_s == 5


@pytest.mark.parametrize(("kind", "status"), [("unavailable", 503), ("timeout", 504), ("internal", 500)])
def test_failures_map_to_statuses_once_in_each_shape(client: TestClient, backend: FakeBackend, metrics: Recorded,
                                                     kind: str, status: int) -> None:
    backend.failure = kind
    r = client.post("/v1/answer", json={"question": "q"}, headers=AUTH)
    assert r.status_code == status and r.json() == {"detail": f"{kind} happened"}
    r = client.post("/v1/chat/completions", json=_chat(), headers=AUTH)
    assert r.status_code == status
    assert r.json() == {"error": {"message": f"{kind} happened", "type": "server_error", "param": None,
                                  "code": kind}}
    backend.mid_stream = True  # after the first step: the stream's last event is the error
    events = _sse(client.post("/v1/answer/stream", json={"question": "q"}, headers=AUTH).text)
    assert [e for e, _ in events] == ["step", "error"]
    assert json.loads(events[-1][1]) == {"status": status, "detail": f"{kind} happened"}
    events = _sse(client.post("/v1/chat/completions", json=_chat(stream=True), headers=AUTH).text)
    assert json.loads(events[-2][1])["error"]["code"] == kind and events[-1][1] == "[DONE]"
    counted = [s for _, s in metrics.failures]
    assert counted == ([status] * 4 if status in (503, 504) else [])
    assert "server-timing" not in r.headers


def test_an_answer_says_where_its_time_went_in_server_timing(client: TestClient, backend: FakeBackend) -> None:
    expected = ('loop;dur=12.5;desc="reasoning loop", search;dur=1.5;desc="retrieval over all steps", '
                'generate;dur=9.25;desc="engine over all steps"')
    for path, body in (("/v1/answer", {"question": "q"}), ("/v1/chat/completions", _chat())):
        r = client.post(path, json=body, headers=AUTH)
        assert r.status_code == 200 and r.headers["server-timing"] == expected
    r = client.post("/v1/answer", json={"question": ""}, headers=AUTH)
    assert r.status_code == 422 and "server-timing" not in r.headers


def test_a_stream_whose_backend_breaks_ends_with_an_error_event_not_a_cut_body(
        client: TestClient, backend: FakeBackend) -> None:
    backend.raise_mid_stream = True
    events = _sse(client.post("/v1/answer/stream", json={"question": "q"}, headers=AUTH).text)
    assert [e for e, _ in events] == ["step", "error"]
    assert json.loads(events[-1][1]) == {"status": 500, "detail": "internal error (RuntimeError)"}
    events = _sse(client.post("/v1/chat/completions", json=_chat(stream=True), headers=AUTH).text)
    assert json.loads(events[-2][1])["error"]["type"] == "server_error" and events[-1][1] == "[DONE]"


# --- auth and body limits, before the body is parsed ---------------------------------------------


def test_the_token_is_checked_before_the_body(client: TestClient, backend: FakeBackend) -> None:
    for path in ("/v1/answer", "/v1/answer/stream", "/v1/chat/completions"):
        r = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.post(path, content=b"x" * 10_000, headers={"content-type": "application/json"})
        assert r.status_code == 401
        r = client.post(path, content=b"\xff\xfe", headers={"content-type": "application/json",
                                                           "Authorization": "Bearer wrong"})
        assert r.status_code == 401
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert client.post("/v1/answer", json={"question": "q"}).json() == {
        "detail": "missing or wrong bearer token; send 'Authorization: Bearer <token>'"}
    assert backend.calls == []
    # liveness and the schema stay open
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(client: TestClient, scheme: str) -> None:
    r = client.post("/v1/answer", json={"question": "q"}, headers={"Authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 200, r.text


def test_bodies_over_the_limit_get_413_and_invalid_utf8_400(client: TestClient, backend: FakeBackend) -> None:
    big = json.dumps({"question": "q", "pad": "x" * 5000}).encode()
    r = client.post("/v1/answer", content=big, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["detail"]
    r = client.post("/v1/chat/completions", content=big, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Any:  # no Content-Length: cut off once past the limit
        for _ in range(10):
            yield b"x" * 1000

    r = client.post("/v1/answer", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/answer", content=b'{"question": "caf\xe9"}',  # Latin-1, not UTF-8
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "not valid UTF-8 (byte 17)" in r.json()["detail"]
    r = client.post("/v1/chat/completions", content=b'{"model": "\xff"}', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_encoding"
    r = client.post("/v1/answer", content=b'{"question": "unterminated', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON (Unterminated string" in r.json()["detail"]
    assert backend.calls == []


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"question": "q", "timeout_s": NaN}', "NaN is not a JSON number"),
    (b'{"question": "q", "k": -Infinity}', "-Infinity is not a JSON number"),
    (b"[" * 4000, "nested too deeply"),  # past Python's recursion limit, under the 4096-byte body limit
    (b'{"question": "q"} trailing', "Extra data at line 1 column 19"),
    (b"", "it is empty"), (b" \n ", "it is empty"),
    ("\ufeff\ufeff{}".encode(), "a second byte-order mark (U+FEFF) at the start"),
])
def test_what_rfc_8259_does_not_call_json_is_400_invalid_json_on_both_apis(
        client: TestClient, backend: FakeBackend, body: bytes, reason: str) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    r = client.post("/v1/answer", content=body, headers=headers)
    assert r.status_code == 400 and f"not valid JSON ({reason})" in r.json()["detail"], r.text
    r = client.post("/v1/chat/completions", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json" and reason in r.json()["error"]["message"]
    assert backend.calls == []


@pytest.mark.parametrize(("body", "kind"), [(b"null", "null"), (b'"q"', "a string"), (b"[1, 2]", "an array"),
                                          (b"3", "a number")])
def test_json_that_is_not_an_object_is_told_to_send_one(client: TestClient, body: bytes, kind: str) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    r = client.post("/v1/answer", content=body, headers=headers)
    assert r.status_code == 422 and f"must be a JSON object (this one is {kind})" in r.json()["detail"], r.text
    r = client.post("/v1/chat/completions", content=body, headers=headers)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] is None and f"(this one is {kind})" in error["message"]


def test_what_python_cannot_read_or_a_charset_other_than_utf8_is_refused_with_the_reason(backend: FakeBackend) -> None:
    client = TestClient(build_api(LIMITS, backend, model_name=MODEL, token=TOKEN, max_body_bytes=8192, metrics=Recorded()))
    body = b'{"question": "q", "k": ' + b"9" * 4400 + b"}"  # valid JSON; past Python's 4300-digit limit
    r = client.post("/v1/answer", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "an integer of 4400 digits; this server reads at most 4300" in r.json()["detail"]
    r = client.post("/v1/answer", content='{"question": "q"}'.encode("utf-16-le"),
                    headers={**AUTH, "content-type": "application/json; charset=utf-16"})
    assert r.status_code == 415 and "declares charset=utf-16" in r.json()["detail"]
    r = client.post("/v1/answer", content=b'{"question": "q"}', headers={**AUTH, "content-type": "application/json; charset=UTF-8"})
    assert r.status_code == 200
    assert len(backend.calls) == 1


def test_an_error_message_lists_ten_problems_then_how_many_more(client: TestClient) -> None:
    body = {"question": "q", **{f"x{i}": 1 for i in range(300)}}  # 300 unknown fields
    r = client.post("/v1/answer", json=body, headers=AUTH)
    detail = r.json()["detail"]
    assert r.status_code == 422 and detail.count("Extra inputs are not permitted") == 10
    assert detail.endswith("; and 290 more") and len(r.content) < 1000
    r = client.post("/v1/chat/completions", json=_chat(**{f"x{i}": 1 for i in range(300)}), headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "x0"


def test_replies_quoting_the_clients_input_stay_small(backend: FakeBackend) -> None:
    client = TestClient(build_api(LIMITS, backend, model_name=MODEL, token=TOKEN, max_body_bytes=1 << 20,
                                  metrics=Recorded()))
    long = "m" * 300_000
    r = client.post("/v1/chat/completions", json={"model": long, "messages": [{"role": "user", "content": "q"}]},
                    headers=AUTH)
    assert r.status_code == 404 and len(r.content) < 1000 and "(300002 characters)" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json=_chat(**{long: 1}), headers=AUTH)
    error = r.json()["error"]
    assert r.status_code == 400 and len(r.content) < 1000 and error["param"].endswith("(300000 characters)")
    r = client.post("/v1/answer", json={"question": "q", **{f"{i}{long}": 1 for i in range(3)}}, headers=AUTH)
    assert r.status_code == 422 and len(r.content) < 2000
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": long, "content": "q"}] * 3},
                    headers=AUTH)
    assert r.status_code == 400 and len(r.content) < 2000
    r = client.post("/v1/answer", json={"question": "q", "k": int("9" * 4000)}, headers=AUTH)
    assert r.status_code == 422 and len(r.content) < 1000 and "k: must be between 1 and 20" in r.json()["detail"]
    assert backend.calls == []


def test_a_form_body_on_the_openai_route_is_shown_an_openai_body(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", content=b"model=x", headers={**AUTH, "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and f'"model": "{MODEL}", "messages"' in r.json()["error"]["message"]


def test_a_field_name_that_is_not_unicode_is_named_as_such(client: TestClient) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    r = client.post("/v1/answer", content=b'{"question": "q", "\\ud800x": 1}', headers=headers)
    assert r.status_code == 422 and "a field name contains an unpaired UTF-16 surrogate (U+D800" in r.json()["detail"]
    r = client.post("/v1/chat/completions", content=b'{"model": "m", "\\ud800x": 1}', headers=headers)
    assert r.status_code == 400 and "a field name contains an unpaired" in r.json()["error"]["message"]


def test_a_leading_byte_order_mark_is_ignored(client: TestClient, backend: FakeBackend) -> None:
    r = client.post("/v1/answer", content='\ufeff{"question": "Capital of Norway?"}'.encode(),
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert backend.calls[-1][0] == "Capital of Norway?"


# --- the OpenAI-compatible API -----------------------------------------------------------------------


def test_chat_completion_carries_the_answer_reasoning_and_steps(client: TestClient, backend: FakeBackend) -> None:
    r = client.post("/v1/chat/completions", headers=AUTH, json={
        "model": MODEL, "max_tokens": 8, "temperature": 0.5, "seed": 3, "k": 2, "max_steps": 4, "user": "u1",
        "n": 1, "logprobs": False, "stream": False,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First?"},
                     {"role": "assistant", "content": "Earlier."}, {"role": "user", "content": "Capital of Norway?"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL and body["id"].startswith("chatcmpl-")
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Oslo",
                       "reasoning_content": "Norway's capital is Oslo.\nSo the answer is: Oslo."}
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"] == ANSWER["usage"]
    assert body["steper"] == {"steps": STEPS, "error": None, "latency_ms": 12.5}
    question, settings = backend.calls[-1]
    assert question == "Capital of Norway?"  # the last user message
    assert settings == AnswerSettings(max_steps=4, k=2, timeout_s=60.0,
                                      sampling=Sampling(temperature=0.5, max_tokens=8, seed=3))
    client.post("/v1/chat/completions", headers=AUTH, json=_chat(
        [{"type": "text", "text": "In parts?"}], max_tokens=8, max_completion_tokens=5))
    assert backend.calls[-1][0] == "In parts?" and backend.calls[-1][1].sampling.max_tokens == 5


@pytest.mark.parametrize(("extra", "field"), [
    ({"n": 2}, "n"), ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logprobs": True}, "logprobs"), ({"top_logprobs": 2}, "top_logprobs"), ({"tool_choice": "auto"}, "tool_choice"),
    ({"stop": ["\n"]}, "stop"), ({"top_p": 0.9}, "top_p"), ({"response_format": {"type": "json_object"}}, "response_format"),
])
def test_fields_the_loop_cannot_honour_are_400_naming_the_field(client: TestClient, extra: dict[str, Any],
                                                                 field: str) -> None:
    r = client.post("/v1/chat/completions", json=_chat(**extra), headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["code"] == "unsupported_parameter" and error["message"].startswith(field)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "status", "param", "text"), [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}, 404, "model", "does not exist"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "q"}]}, 400, "messages", "needs a user message"),
    ({"model": MODEL, "messages": []}, 400, "messages", "at least 1 item"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "  "}]}, 400, "messages.0.content", "is empty"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "\u200b\u200b"}]}, 400, "messages.0.content", "is empty"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "q"}]}, 400, "messages.0", "does not match any"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "q"}], "max_tokens": 17}, 400, "max_tokens", "16"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "q"}], "temperature": 3}, 400, "temperature", "2"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "q"}], "colour": "red"}, 400, "colour",
     "unrecognized request argument"),
    ({"messages": [{"role": "user", "content": "q"}]}, 400, "model", "Field required"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "q"}], "stream_options": {"foo": 1}}, 400,
     "stream_options.foo", "unrecognized request argument supplied: stream_options.foo"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "q", "colour": "red"}]}, 400, "messages.0.colour",
     "unrecognized request argument supplied: messages.0.colour"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                  {"type": "text", "text": "b"}]}]},
     400, "messages.0.content", "holds 2 parts; send the question as one text part"),
])
def test_openai_errors_keep_openai_shape(client: TestClient, body: dict[str, Any], status: int, param: str,
                                         text: str) -> None:
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and text in error["message"], error


def test_an_earlier_answer_is_accepted_as_the_sdk_returns_it(client: TestClient, backend: FakeBackend) -> None:
    first = client.post("/v1/chat/completions", headers=AUTH, json=_chat()).json()["choices"][0]["message"]
    assert "reasoning_content" in first
    r = client.post("/v1/chat/completions", headers=AUTH, json={"model": MODEL, "messages": [
        {"role": "user", "content": "First?"}, {**first, "tool_calls": None, "refusal": None, "annotations": []},
        {"role": "user", "content": "And Sweden?"}]})
    assert r.status_code == 200, r.text
    assert backend.calls[-1][0] == "And Sweden?"


def test_models_lists_the_served_model(client: TestClient) -> None:
    body = client.get("/v1/models", headers=AUTH).json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [MODEL]
    assert body["data"][0]["object"] == "model" and body["data"][0]["owned_by"] == "steper-ray"


def test_the_official_openai_client_sync_stream_and_async(app: Any, client: TestClient) -> None:
    import openai

    sync = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client, max_retries=0)
    assert [m.id for m in sync.models.list()] == [MODEL]
    done = sync.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Capital of Norway?"}],
                                        max_tokens=8, seed=1)
    answer = client.post("/v1/answer", json={"question": "Capital of Norway?"}, headers=AUTH).json()
    assert done.choices[0].message.content == answer["answer"] == "Oslo"
    assert done.choices[0].message.reasoning_content == "\n".join(s["reasoning"] for s in answer["steps"])  # type: ignore[attr-defined]
    assert done.model_extra["steper"]["steps"] == answer["steps"]  # type: ignore[index]
    assert done.usage is not None and done.usage.completion_tokens == 9

    chunks = list(sync.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}], stream=True,
                                               stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert [getattr(d, "reasoning_content", None) for d in deltas] == [
        "Norway's capital is Oslo.", "\nSo the answer is: Oslo.", None]
    assert deltas[0].role == "assistant" and deltas[-1].content == "Oslo"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens == 49  # type: ignore[union-attr]
    assert chunks[0].model_extra["steper"]["step"] == STEPS[0]  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as info:
        sync.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}], n=2)
    assert info.value.param == "n" and info.value.code == "unsupported_parameter"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=client,
                      max_retries=0).models.list()

    async def use_async() -> tuple[str | None, list[str]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            aclient = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=http,
                                         max_retries=0)
            done = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}])
            stream = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}],
                                                           stream=True)
            reasoning = [c.choices[0].delta.reasoning_content async for c in stream  # type: ignore[attr-defined]
                         if c.choices and getattr(c.choices[0].delta, "reasoning_content", None)]
            return done.choices[0].message.content, reasoning

    content, reasoning = asyncio.run(use_async())
    assert content == "Oslo" and "".join(reasoning) == "Norway's capital is Oslo.\nSo the answer is: Oslo."


def test_the_openai_client_raises_a_stream_error_event(client: TestClient, backend: FakeBackend) -> None:
    import openai

    backend.failure, backend.mid_stream = "timeout", True
    sync = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client, max_retries=0)
    with pytest.raises(openai.APIError, match="timeout happened"):
        list(sync.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}], stream=True))


# --- the schema -----------------------------------------------------------------------------------


def test_the_schema_declares_every_limit_content_type_and_the_security_scheme(backend: FakeBackend) -> None:
    limits = Limits(max_question_chars=300, max_steps=5, max_k=7, max_timeout_s=12.0, default_steps=4,
                    default_k=3, max_tokens=32)
    schema = TestClient(build_api(limits, backend, model_name=MODEL, token=TOKEN, max_body_bytes=4096)
                        ).get("/openapi.json").json()
    props = schema["components"]["schemas"]["AnswerRequest"]["properties"]
    assert {k: props["question"][k] for k in ("minLength", "maxLength", "pattern")} == {
        "minLength": 1, "maxLength": 300, "pattern": NOT_BLANK}
    assert props["k"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 7}
    assert props["k"]["default"] == 3 and props["max_steps"]["default"] == 4
    assert props["max_steps"]["anyOf"][0] == {"type": "integer", "minimum": 2, "maximum": 5}
    assert props["timeout_s"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "maximum": 12.0}
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["model"]["const"] == MODEL and chat["max_tokens"]["anyOf"][0]["maximum"] == 32
    assert chat["n"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 1}
    paths = schema["paths"]
    stream_ok = paths["/v1/answer/stream"]["post"]["responses"]["200"]["content"]
    assert list(stream_ok) == ["text/event-stream"]
    assert set(paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]) == {
        "application/json", "text/event-stream"}
    for path in ("/v1/answer", "/v1/chat/completions"):  # the routes that answer whole say where the time went
        assert set(paths[path]["post"]["responses"]["200"]["headers"]) == {"Server-Timing"}
    assert "headers" not in paths["/v1/answer/stream"]["post"]["responses"]["200"]
    for path in ("/v1/answer", "/v1/answer/stream", "/v1/chat/completions"):
        responses = paths[path]["post"]["responses"]
        assert {"400", "401", "413", "415", "500", "503", "504"} <= set(responses)
        assert all(list(r["content"]) == ["application/json"] for s, r in responses.items() if s != "200")
        assert paths[path]["post"]["security"] == [{"bearerAuth": []}]
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token> (serve.auth_token_env)"}
    assert "security" not in paths["/healthz"]["get"]
    assert "HTTPValidationError" not in json.dumps(schema)
    open_schema = TestClient(build_api(limits, backend, model_name=MODEL, token=None, max_body_bytes=4096)
                             ).get("/openapi.json").json()
    assert "securitySchemes" not in open_schema["components"]
    assert "401" not in open_schema["paths"]["/v1/answer"]["post"]["responses"]


def test_one_model_is_retrieved_by_its_name_as_openai_serves_it(client: TestClient, metrics: Recorded) -> None:
    import openai

    sdk = openai.OpenAI(api_key=TOKEN, base_url="http://testserver/v1", http_client=client, max_retries=0)
    got = sdk.models.retrieve(MODEL)
    assert (got.id, got.object, got.owned_by) == (MODEL, "model", "steper-ray")
    assert got.model_dump() == sdk.models.list().data[0].model_dump()
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found" and caught.value.body["param"] == "model"
    assert client.get(f"/v1/models/{MODEL}").status_code == 401  # behind the token as /v1/models is
    assert metrics.requests == [("/v1/models/{model}", 200), ("/v1/models", 200), ("/v1/models/{model}", 404),
                                ("/v1/models/{model}", 401)]


def test_a_route_this_server_lacks_gets_404_in_its_apis_shape(client: TestClient) -> None:
    import openai

    for method, path in (("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("GET", "/v1/models/x/y")):
        r = client.request(method, path, json={"model": MODEL, "prompt": "q"}, headers=AUTH)
        assert r.status_code == 404 and r.json() == {"error": {
            "message": f"Invalid URL ({method} {path}): this server serves POST /v1/chat/completions and GET "
                       "/v1/models[/{model}] (OpenAI-compatible), POST /v1/answer and POST /v1/answer/stream",
            "type": "invalid_request_error", "param": None, "code": "unknown_url"}}
    # the steper API's own paths and paths outside /v1 keep its shape
    for path in ("/v1/answer/x", "/nowhere", "/v1"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 404 and r.json()["detail"].startswith(f"Invalid URL (GET {path}): ")
    long = "/v1/" + "x" * 5000
    assert len(client.post(long, headers=AUTH).json()["error"]["message"]) < 400
    # the SDK raises it as NotFoundError with OpenAI's body
    sdk = openai.OpenAI(api_key=TOKEN, base_url="http://testserver/v1", http_client=client, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.completions.create(model=MODEL, prompt="q")
    assert caught.value.code == "unknown_url" and "Invalid URL (POST /v1/completions)" in caught.value.message


def test_requests_are_counted_by_route_and_status_refused_ones_too(client: TestClient, metrics: Recorded) -> None:
    client.post("/v1/answer", json={"question": "q"}, headers=AUTH)
    client.post("/v1/answer", json={"question": "q"})
    client.post("/v1/chat/completions", content=b"x" * 5000, headers={**AUTH, "content-type": "application/json"})
    client.get("/v1/models", headers=AUTH)
    client.get("/nowhere")
    assert metrics.requests == [("/v1/answer", 200), ("/v1/answer", 401), ("/v1/chat/completions", 413),
                                ("/v1/models", 200), ("other", 404)]
    assert route_of({"path": "/app/v1/answer/", "root_path": "/app"}) == "/v1/answer"


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(backend: FakeBackend, metrics: Recorded) -> None:
    import schemathesis
    from api_fuzz import fuzz

    # The served default body limit (1 MiB): a JSON Schema cannot bound a body's bytes, so with
    # the other tests' 4 KiB limit a schema-valid body of random text could be a correct 413.
    app = build_api(LIMITS, backend, model_name=MODEL, token=TOKEN, max_body_bytes=1 << 20, metrics=metrics)
    report = fuzz(schemathesis.openapi.from_asgi("/openapi.json", app), max_examples=15, headers=AUTH)
    assert report.server_errors == [] and report.schema_violations == [] and report.other_failures == []
    assert all(n == 15 for op, n in report.examples.items() if "/v1/" in op), report.examples


def test_the_grafana_dashboard_charts_every_application_metric() -> None:
    from pathlib import Path

    import steper_ray.serve.metrics as m

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs/grafana/steper-serving.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    names = [line.split()[0] for line in m.__doc__.splitlines() if line.startswith("ray_steper_")]  # type: ignore[union-attr]
    assert len(names) == 8 and all(name in exprs for name in names), names

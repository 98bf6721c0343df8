"""The ingress's request-error handling on the API over a fake backend (the Serve app is tested
in tests/integration/test_serve.py): a body not sent as JSON gets 415 saying what to send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from steper_ray.serve.api import build_api
from steper_ray.serve.guard import is_json_content_type
from steper_ray.serve.schemas import Limits
from steper_ray.serve.service import AnswerSettings


class _Echo:
    async def answer(self, question: str, settings: AnswerSettings) -> dict[str, Any]:
        return {"data": {"answer": question, "steps": [], "latency_ms": 0.0, "error": None,
                         "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}}

    async def stream(self, question: str, settings: AnswerSettings) -> AsyncIterator[dict[str, Any]]:
        yield {"event": "answer", "data": (await self.answer(question, settings))["data"]}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = build_api(Limits(1000, 8, 20, 60.0, 3, 4, 16), _Echo(), model_name="m", token=None, max_body_bytes=4096)
    return TestClient(app)


@pytest.mark.parametrize(("content_type", "shown"), [
    ("text/plain", "this one is 'text/plain'"),
    ("application/x-www-form-urlencoded", "this one is 'application/x-www-form-urlencoded'"),  # curl -d
    (None, "this one has none"),
])
def test_a_body_not_sent_as_json_gets_415(client: TestClient, content_type: str | None, shown: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/answer", content=b'{"question": "Who directed Jaws?"}', headers=headers)
    assert r.status_code == 415
    assert "Content-Type: application/json" in r.json()["detail"] and shown in r.json()["detail"]
    r = client.post("/v1/chat/completions", content=b'{"model": "m"}', headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


def test_json_bodies_still_get_200_or_422(client: TestClient) -> None:
    ok = client.post("/v1/answer", content=b'{"question": "Who?"}',
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200 and ok.json()["answer"] == "Who?"
    bad = client.post("/v1/answer", json={"k": 2})
    assert bad.status_code == 422 and "question: Field required" in bad.json()["detail"]
    assert is_json_content_type("application/problem+json") and not is_json_content_type("text/json+x")


def test_a_reasoner_that_refuses_work_is_unavailable_not_a_bug() -> None:
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from steper_ray.serve.ingress import _handle_failure

    assert _handle_failure(BackPressureError(5, 5), 1.0)["kind"] == "unavailable"
    assert _handle_failure(ActorDiedError(), 1.0)["kind"] == "unavailable"
    assert _handle_failure(TimeoutError(), 1.0)["kind"] == "timeout"
    assert _handle_failure(KeyError("x"), 1.0)["kind"] == "internal"


def test_serve_refuses_a_port_in_use_and_a_host_that_is_not_this_machines() -> None:
    import socket

    from steper_ray.errors import UserError
    from steper_ray.serve.app import check_can_listen

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(UserError, match=rf"cannot listen on 127.0.0.1:{port} .*set serve.port \(--port\)"):
            check_can_listen("127.0.0.1", port)
    check_can_listen("127.0.0.1", port)  # free again
    with pytest.raises(UserError, match=r"serve.host 'not_a_host!!' is not an address of this machine"):
        check_can_listen("not_a_host!!", 8000)

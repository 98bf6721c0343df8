"""The ingress's request-error handler on a bare FastAPI app (the Serve app is tested in
tests/integration/test_serve.py): a body not sent as JSON gets 415 saying what to send."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from steper_ray.serve.ingress import (
    AnswerRequest,
    _invalid_request,
    is_json_content_type,
)


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]

    @app.post("/v1/answer")
    async def answer(body: AnswerRequest) -> dict[str, str]:
        return {"question": body.question}

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


def test_json_bodies_still_get_200_or_422(client: TestClient) -> None:
    ok = client.post("/v1/answer", content=b'{"question": "Who?"}',
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200 and ok.json() == {"question": "Who?"}
    bad = client.post("/v1/answer", json={"k": 2})
    assert bad.status_code == 422 and "question: Field required" in bad.json()["detail"]
    assert is_json_content_type("application/problem+json") and not is_json_content_type("text/json+x")

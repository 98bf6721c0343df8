"""Real engines on a tiny offline model, and the OpenAI client against a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from steper_ray.reasoning.generators.hf_engine import HFGenerator
from steper_ray.reasoning.generators.openai_client import OpenAIGenerator
from steper_ray.reasoning.generators.protocol import Generator, GenRequest
from steper_ray.reasoning.steps import shape_step

PROMPTS = [
    "Wikipedia Title: Rush\nRush was a Canadian rock band.\n\nQ: Which band?\nA:",
    "Q: Who was the drummer of Rush?\nA:",
    "Q: Where is Port Blair?\nA: It is a city.",
]


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator(str(tiny_model_dir), max_tokens=12, batch_size=3, max_model_len=512, device="cpu")


def test_hf_batched_left_padding_equals_one_by_one(hf: HFGenerator) -> None:
    assert isinstance(hf, Generator)
    batched = hf.generate([GenRequest(p) for p in PROMPTS])
    single = [hf.generate([GenRequest(p)])[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.error is None and 0 < g.num_tokens <= 12 and "\n" not in g.text for g in batched)


def test_hf_too_long_prompt_is_an_error_row_not_a_failed_batch(hf: HFGenerator) -> None:
    long = "word " * 600
    out = hf.generate([GenRequest(PROMPTS[0]), GenRequest(long), GenRequest(PROMPTS[1])])
    assert out[0].error is None and out[2].error is None
    assert out[1].error is not None and "exceeds max_model_len 512" in out[1].error


LONE_SURROGATE = "Q: Who founded \ud800 the company?\nA:"  # JSON "\ud800": no character at all


def test_hf_a_request_that_cannot_be_tokenised_fails_alone(hf: HFGenerator) -> None:
    # The tokenizer rejects a lone surrogate (TypeError); the good requests batched with it
    # must get exactly what they get on their own.
    out = hf.generate([GenRequest(PROMPTS[0]), GenRequest(LONE_SURROGATE), GenRequest(PROMPTS[1])])
    assert out[1].error is not None and "could not be tokenised" in out[1].error and out[1].finish_reason == "error"
    alone = hf.generate([GenRequest(PROMPTS[0]), GenRequest(PROMPTS[1])])
    assert [(g.text, g.error) for g in (out[0], out[2])] == [(g.text, None) for g in alone]


def test_hf_per_request_max_tokens_and_seed(hf: HFGenerator) -> None:
    short = hf.generate([GenRequest(p, max_tokens=2) for p in PROMPTS])
    assert all(g.error is None and 0 < g.num_tokens <= 2 and g.prompt_tokens > 0 for g in short)
    sampled = GenRequest(PROMPTS[1], temperature=1.0, seed=7)
    a, b = hf.generate([sampled])[0], hf.generate([sampled])[0]
    assert a.text == b.text and a.error is None  # the request's seed, not the engine's, seeds the draw


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_generator_matches_hf_greedy_and_isolates_bad_prompts(tiny_model_dir: Path, hf: HFGenerator) -> None:
    pytest.importorskip("vllm")
    from steper_ray.reasoning.generators.vllm_engine import VLLMGenerator

    vg = VLLMGenerator(str(tiny_model_dir), max_model_len=512, max_tokens=12, dtype="float32")
    reqs = [GenRequest(p) for p in PROMPTS]
    out = vg.generate(reqs + [GenRequest("word " * 600)])
    assert [(g.text, g.finish_reason) for g in out[:3]] == [(g.text, g.finish_reason) for g in hf.generate(reqs)]
    assert out[3].error is not None and "over max_model_len 512" in out[3].error
    assert all(0 < g.num_tokens <= 12 for g in out[:3])
    # a retry's min_tokens means the same on both engines (neither newline nor EOS ends it early)
    retry = [GenRequest(p, min_tokens=5) for p in PROMPTS]
    v, h = vg.generate(retry), hf.generate(retry)
    assert [(g.text, g.num_tokens, g.finish_reason) for g in v] == [(g.text, g.num_tokens, g.finish_reason) for g in h]
    assert all(g.num_tokens >= 5 for g in v)
    # a prompt the tokenizer rejects, and per-request max_tokens, the same on both engines
    odd = [GenRequest(PROMPTS[0], max_tokens=3), GenRequest(LONE_SURROGATE), GenRequest(PROMPTS[1], max_tokens=3)]
    v, h = vg.generate(odd), hf.generate(odd)
    assert v[1].error is not None and "could not be tokenised" in v[1].error
    assert [(g.text, g.num_tokens) for g in (v[0], v[2])] == [(g.text, g.num_tokens) for g in (h[0], h[2])]
    assert all(g.num_tokens <= 3 for g in (v[0], v[2]))


class _Handler(BaseHTTPRequestHandler):
    plan: list[int] = []  # status codes to answer before succeeding
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"body": body, "auth": self.headers.get("Authorization")})
        status = type(self).plan.pop(0) if type(self).plan else 200
        if status == 200 and "messages" in body:  # chat: continue the last (assistant) message
            payload = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "\n",
                                    "message": {"role": "assistant", "content": f" echo {body['messages'][-1]['content'][-5:]}"}}],
                       "usage": {"completion_tokens": 3, "prompt_tokens": 5, "total_tokens": 8}}
        elif status == 200:
            payload = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "text": f" echo {body['prompt'][-5:]}\nignored",
                                    "finish_reason": "stop", "stop_reason": None, "logprobs": None}],
                       "usage": {"completion_tokens": 3, "prompt_tokens": 5, "total_tokens": 8}}
        else:
            payload = {"error": "nope"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _Handler.plan, _Handler.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_openai_generator_posts_completions_and_retries(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEACHER_KEY", "sekret")
    gen = OpenAIGenerator(server, "teacher-70b", api_key_env="TEACHER_KEY", max_tokens=7,
                          max_retries=2, concurrency=2)
    _Handler.plan = [503, 429]  # two transient failures, then success (the SDK's own retries)
    out = gen.generate([GenRequest("Q: hello?\nA:")])
    assert shape_step(out[0].text, out[0].finish_reason, []).text == "echo o?\nA:".split("\n")[0]
    assert out[0].num_tokens == 3 and out[0].error is None and out[0].finish_reason == "eos"
    assert len(_Handler.seen) == 3
    body = _Handler.seen[-1]["body"]
    assert body["model"] == "teacher-70b" and body["max_tokens"] == 7 and body["stop"] == ["\n"]
    assert _Handler.seen[-1]["auth"] == "Bearer sekret"

    _Handler.plan = [400]  # a client error is not retried
    out = gen.generate([GenRequest("x")])
    assert out[0].error is not None and out[0].error.startswith("HTTP 400") and len(_Handler.seen) == 4

    _Handler.plan = [500, 500, 500]  # retries exhausted: an error row, not an exception
    out = gen.generate([GenRequest("y")])
    assert out[0].error is not None and "gave up after 3 attempts: HTTP 500" in out[0].error
    out = gen.generate([GenRequest("y"), GenRequest("z")])  # and the client still works
    assert [g.error for g in out] == [None, None]


def test_openai_generator_isolates_a_prompt_json_cannot_carry(server: str) -> None:
    gen = OpenAIGenerator(server, "m", api_key_env=None, max_tokens=7, max_retries=0)
    out = gen.generate([GenRequest("fine"), GenRequest(LONE_SURROGATE), GenRequest("fine too", max_tokens=3, seed=5)])
    assert out[0].error is None and out[2].error is None and out[1].error is not None
    assert "UnicodeEncodeError" in out[1].error
    body = next(x["body"] for x in _Handler.seen if x["body"]["prompt"] == "fine too")
    assert body["max_tokens"] == 3 and body["seed"] == 5
    assert out[0].prompt_tokens == 5
    gen.close()


def test_openai_generator_unreachable_server_is_an_error_row() -> None:
    gen = OpenAIGenerator("http://127.0.0.1:9/v1", "m", api_key_env=None, timeout_s=0.5, max_retries=1)
    out = gen.generate([GenRequest("x")])
    assert out[0].error is not None and "ConnectError" in out[0].error


def test_openai_generator_chat_continues_the_assistant_turn(server: str) -> None:
    gen = OpenAIGenerator(server, "teacher-70b", api_key_env=None, max_tokens=7, max_retries=0)
    messages = (("system", "Be brief."), ("user", "Q: hello?"), ("assistant", "A: first.\n"))
    out = gen.generate([GenRequest("record only", messages=messages, min_tokens=2)])
    assert out[0].text == " echo rst.\n" and out[0].finish_reason == "stop" and out[0].error is None
    body = _Handler.seen[-1]["body"]
    assert body["messages"] == [{"role": r, "content": c} for r, c in messages]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["min_tokens"] == 2 and body["stop"] == ["\n"] and "prompt" not in body
    gen.close()

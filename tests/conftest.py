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

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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

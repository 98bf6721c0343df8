"""The serving benchmark's turn-taking between the in-process and HTTP sides, and the overhead
it derives; fake askers stand in for both sides."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from steper_ray.bench.serving import (
    Reply,
    Timed,
    interleaved,
    outside_engine_p50_ms,
    overhead,
    overhead_parts,
    paired_p50_ms,
    server_timing_ms,
)


def _asker(log: list[tuple[str, str]], side: str, delay_s: float, fail: set[str] = frozenset()):  # type: ignore[assignment]
    async def ask(q: str) -> Reply | None:
        log.append((side, q))
        await asyncio.sleep(delay_s)
        return None if q in fail else Reply(3, 1.0, 0.25, 0.5)  # the loop's own time: 1 ms
    return ask


def test_concurrency_one_alternates_which_side_goes_first_and_pairs_each_question() -> None:
    log: list[tuple[str, str]] = []
    qs = ["q0", "q1", "q2", "q3"]
    a, b = asyncio.run(interleaved(_asker(log, "in", 0.0), _asker(log, "http", 0.02), qs, 1))
    assert log == [("in", "q0"), ("http", "q0"), ("http", "q1"), ("in", "q1"),
                   ("in", "q2"), ("http", "q2"), ("http", "q3"), ("in", "q3")]
    assert sorted(a.latency_ms) == sorted(b.latency_ms) == [0, 1, 2, 3]
    assert a.tokens == b.tokens == 12 and a.failed == b.failed == 0
    paired = paired_p50_ms(a, b)
    assert paired is not None and 15 <= paired <= 200  # each HTTP request waited 20 ms more
    assert a.loop_ms == b.loop_ms == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    parts = overhead_parts(a, b)
    assert parts["loop_ms"] == 0.0 and parts["edge_ms"] is not None and parts["edge_ms"] >= 18  # the wait, outside the loop
    assert parts["retrieval_ms"] == parts["engine_ms"] == 0.0 and a.generate_ms == {i: 0.5 for i in range(4)}
    assert b.summary()["requests"] == 4 and b.summary()["requests_per_s"] > 0


def test_higher_concurrency_takes_turns_over_two_halves_abba() -> None:
    log: list[tuple[str, str]] = []
    qs = [f"q{i}" for i in range(8)]
    a, b = asyncio.run(interleaved(_asker(log, "in", 0.0), _asker(log, "http", 0.0), qs, 2))
    sides = [side for side, _ in log]
    assert sides == ["in"] * 4 + ["http"] * 8 + ["in"] * 4
    assert [q for side, q in log if side == "in"] == qs and [q for side, q in log if side == "http"] == qs
    assert sorted(a.latency_ms) == sorted(b.latency_ms) == list(range(8))


def test_failed_requests_are_counted_and_left_out_of_the_pairs() -> None:
    log: list[tuple[str, str]] = []
    a, b = asyncio.run(interleaved(_asker(log, "in", 0.0), _asker(log, "http", 0.0, {"q1"}), ["q0", "q1", "q2"], 1))
    assert b.failed == 1 and sorted(b.latency_ms) == [0, 2] and sorted(a.latency_ms) == [0, 1, 2]
    assert paired_p50_ms(a, b) is not None
    assert paired_p50_ms(Timed(latency_ms={0: 1.0}), Timed(latency_ms={0: 2.0})) is None  # one pair is no median


def test_overhead_checks_the_per_request_p50_at_one_and_the_ratio_from_four() -> None:
    inproc = Timed(latency_ms={0: 100.0, 1: 200.0, 2: 300.0}, loop_ms={0: 99.0, 1: 199.0, 2: 299.0},
                   tokens=30, wall_s=0.6)
    http = Timed(latency_ms={0: 130.0, 1: 260.0, 2: 310.0}, loop_ms={0: 120.0, 1: 250.0, 2: 305.0},
                 tokens=30, wall_s=0.65)
    inproc.search_ms, inproc.generate_ms = {0: 1.0, 1: 1.0, 2: 1.0}, {0: 90.0, 1: 180.0, 2: 280.0}
    http.search_ms, http.generate_ms = {0: 8.0, 1: 9.0, 2: 7.0}, {0: 100.0, 1: 225.0, 2: 290.0}
    one = overhead(1, inproc, http)
    assert one["per_request_p50_overhead_ms"] == 30.0 and one["p50_overhead_ms"] == 60.0
    # edge: 10, 10, 5 ms between the client and the replica's loop; loop: 21, 51, 6 ms in the replica,
    # of which retrieval 7, 8, 6 and engine 10, 45, 10
    assert one["per_request_p50_overhead_parts"] == {"edge_ms": 10.0, "loop_ms": 21.0, "retrieval_ms": 7.0,
                                                     "engine_ms": 10.0}
    # outside the engines: (130-100)-(100-90), (260-225)-(200-180), (310-290)-(300-280) = 20, 15, 0
    assert one["per_request_p50_overhead_outside_engine_ms"] == 15.0 == outside_engine_p50_ms(inproc, http)
    assert one["target"] == {"per_request_p50_overhead_ms_max": 50.0, "met": True}
    four = overhead(4, inproc, http)
    assert four["overhead_ratio"] == round(5.0 / round(3 / 0.65, 3), 3)
    assert four["target"] == {"throughput_ratio_max": 1.10, "met": True} and "per_request_p50_overhead_ms" not in four
    slow = Timed(latency_ms={0: 400.0, 1: 500.0, 2: 600.0}, wall_s=1.5)
    assert overhead(1, inproc, slow)["target"]["met"] is False
    assert overhead(4, inproc, slow)["target"]["met"] is False
    assert overhead(3, inproc, slow)["target"] == {}


def test_server_timing_is_read_by_metric_name() -> None:
    header = 'loop;dur=12.5;desc="reasoning loop", search;dur=1.5;desc="retrieval over all steps", generate;dur=9.25, cache'
    assert server_timing_ms(header) == {"loop": 12.5, "search": 1.5, "generate": 9.25}
    assert server_timing_ms("") == {}


def test_a_reply_without_timing_is_timed_but_left_out_of_the_split() -> None:
    async def ask(q: str) -> Reply | None:
        return Reply(2, 5.0, None, None)
    a, b = asyncio.run(interleaved(ask, ask, ["q0", "q1"], 1))
    assert sorted(b.latency_ms) == [0, 1] and b.loop_ms == {0: 5.0, 1: 5.0} and b.generate_ms == {}
    assert overhead_parts(a, b)["engine_ms"] is None and outside_engine_p50_ms(a, b) is None


@pytest.mark.usefixtures("ray_session")
def test_a_bad_model_or_a_reasoner_larger_than_the_machine_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steper_ray import ray_session
    from steper_ray.bench.serving import run_serving_bench
    from steper_ray.config import load_config
    from steper_ray.errors import UserError

    out = tmp_path / "bench"
    with pytest.raises(UserError, match=r"bench.serving.model \(--model\): '/no/such/model' does not exist"):
        run_serving_bench(load_config(None, ["bench.serving.model=/no/such/model"]), out)
    monkeypatch.setattr(ray_session, "_started", True)  # a Ray this process started: no node will be added
    with pytest.raises(UserError, match=r"needs 64 CPU.*lower bench.serving.reasoner_cpus"):
        run_serving_bench(load_config(None, ["bench.serving.reasoner_cpus=64"]), out)
    assert not out.exists()

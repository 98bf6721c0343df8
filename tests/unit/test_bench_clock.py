"""The generation benchmark's steady-state clock."""

from __future__ import annotations

import pytest


def test_steady_clock_gives_no_rate_from_one_timed_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    import steper_ray.bench.generation as gen

    now = iter([10.0, 10.016, 30.0])
    monkeypatch.setattr(gen.time, "perf_counter", lambda: next(now))
    clock = gen.SteadyClock()
    clock.batch(8, 400)  # warm-up
    clock.batch(8, 453)  # reached the writer together with the first: no window to time
    one = clock.result()
    assert (one["questions"], one["batches_timed"], one["questions_per_s"], one["tokens_per_s"]) == (8, 1, None, None)
    clock.batch(4, 200)
    two = clock.result()
    assert two["questions_per_s"] == round(12 / 20.0, 3) and two["tokens_per_s"] == round(653 / 20.0, 1)
    assert two["total_tokens"] == 1053
    assert gen._ratio(None, 2.0) is None and gen._ratio(1.0, 2.0) == 0.5

"""Connect to Ray once per process; shut down only a Ray this process started itself."""

from __future__ import annotations

_started = False


def ensure_ray() -> None:
    """Connect to a running cluster (RAY_ADDRESS, `ray job submit`) or start a local one."""
    global _started
    import ray

    if not ray.is_initialized():
        ray.init()
        _started = True


def shutdown_if_started() -> None:
    """End a local Ray started by ensure_ray (flushes worker logs before our last line)."""
    global _started
    if _started:
        import ray

        ray.shutdown()
        _started = False

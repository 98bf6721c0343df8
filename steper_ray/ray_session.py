"""Connect to Ray once per process; shut down only a Ray this process started itself; check
that an actor's resource request fits a node before a job waits on it."""

from __future__ import annotations

import logging

from steper_ray.errors import UserError

log = logging.getLogger(__name__)

_started = False


def ensure_ray() -> None:
    """Connect to a running cluster (RAY_ADDRESS, `ray job submit`) or start a local one."""
    global _started
    import ray

    if not ray.is_initialized():
        ray.init()
        _started = True


def started_here() -> bool:
    """Whether the Ray this process uses is one ``ensure_ray`` started (a fresh local one: no
    Serve proxy, no autoscaler) rather than a cluster it connected to."""
    return _started


def check_fits(what: str, num_cpus: float, num_gpus: float, settings: str) -> None:
    """Make sure one actor of ``num_cpus`` CPUs and ``num_gpus`` GPUs fits some node, before a
    job waits for it (Ray queues a request no node can meet forever, silently).

    A Ray this process started (one machine, no autoscaler) raises UserError naming
    ``settings`` (the config keys to change); on a cluster it connected to, an autoscaler may
    still add such a node, so the shortfall is only logged."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0.0) >= num_cpus and r.get("GPU", 0.0) >= num_gpus for r in nodes):
        return
    have = "; ".join(sorted({f"{r.get('CPU', 0.0):g} CPU, {r.get('GPU', 0.0):g} GPU" for r in nodes})) or "none"
    need = f"{what} needs {num_cpus:g} CPU and {num_gpus:g} GPU per actor, more than any node has (nodes: {have})"
    if _started:
        raise UserError(f"{need}; lower {settings} to fit this machine")
    log.warning("%s; waiting for the cluster to add such a node (nothing runs until then)", need)


def shutdown_if_started() -> None:
    """End a local Ray started by ensure_ray (flushes worker logs before our last line)."""
    global _started
    if _started:
        import ray

        ray.shutdown()
        _started = False

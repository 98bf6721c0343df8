"""Assemble the Serve application from a config, for `steper-ray serve`, for `serve run` /
`serve deploy` (``import_path: steper_ray.serve.app:app_builder``) and for tests."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steper_ray.config import (
    DeploymentConfig,
    GeneratorConfig,
    SteperConfig,
    load_config,
)
from steper_ray.errors import UserError
from steper_ray.layout import RunLayout
from steper_ray.models.prepare import resolved
from steper_ray.models.student import trained_student
from steper_ray.retrieval.shards import SHARDED, refuse_lone_shard, shard_dirs
from steper_ray.retrieval.store import check_index_dir

log = logging.getLogger(__name__)


def serve_index(cfg: SteperConfig) -> tuple[Path, dict[str, Any]]:
    """The served index's absolute path and its checked manifest (``check_index_dir``: it fails
    now, with the rebuild command, not in a replica)."""
    path = RunLayout(cfg).serve_index
    if path is None:
        raise UserError("set serve.index: there is no dev set whose index could be served")
    manifest = check_index_dir(path)
    refuse_lone_shard(path)
    return path.resolve(), manifest


def retriever_groups(index: Path, manifest: dict[str, Any]) -> list[tuple[str, Path]]:
    """(deployment name, index directory) of each retriever replica group of the index at
    ``index`` (its checked manifest ``manifest``): ``retriever`` over the whole index, or
    ``retriever-shard-<i>`` over each shard of a sharded one (the reasoner searches them all and
    merges their top-k: ``retrieval.shards``)."""
    if manifest["kind"] != SHARDED:
        return [("retriever", index)]
    return [(f"retriever-{path.name}", path) for path in shard_dirs(index, manifest)]


def serve_model(cfg: SteperConfig) -> GeneratorConfig:
    model = resolved(cfg.serve.model or trained_student(cfg, "serve.model"), "serve.model.model")
    if model.kind == "evidence":
        raise UserError("serve.model.kind 'evidence' needs dataset annotations and cannot answer new "
                        "questions; serve a model (kind hf or vllm)")
    return model  # resolved() made a local directory absolute: replicas may start elsewhere


def deployment_options(d: DeploymentConfig) -> dict[str, Any]:
    a = d.autoscaling
    return {
        "max_ongoing_requests": d.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        "autoscaling_config": {
            "min_replicas": a.min_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        },
    }


def build_app(cfg: SteperConfig) -> Any:
    """Retriever(s) <- Reasoner <- Ingress, each with its replicas, autoscaling and limits from
    ``cfg.serve`` (``serve.retriever`` applies to every shard's group of a sharded index). Missing index or model is a UserError here, before anything starts."""
    from steper_ray.serve.deployments import ReasonerDeployment, RetrieverDeployment
    from steper_ray.serve.ingress import Ingress

    s = cfg.serve
    (index, manifest), model = serve_index(cfg), serve_model(cfg)
    retrievers = [RetrieverDeployment.options(name=name, **deployment_options(s.retriever)).bind(str(path))
                  for name, path in retriever_groups(index, manifest)]
    reasoner = ReasonerDeployment.options(**deployment_options(s.reasoner)).bind(
        retrievers, model.model_dump(), cfg.reasoning.model_dump(), s.model_dump())
    return Ingress.options(**deployment_options(s.ingress)).bind(
        reasoner, s.model_dump(), cfg.reasoning.max_steps, cfg.retrieval.k, model.max_tokens)


def app_builder(args: dict[str, Any]) -> Any:
    """For Serve config files: ``args: {config: FILE, overrides: [key=value, ...]}``."""
    return build_app(load_config(args.get("config"), list(args.get("overrides") or [])))


def check_can_listen(host: str, port: int) -> None:
    """Raise UserError when this machine cannot listen on ``host``:``port`` (a name that does not
    resolve, an address it does not have, a port in use): Ray Serve's proxy would otherwise fail
    seconds later with a traceback. Only meaningful before a Serve proxy of ours holds the port."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"serve.host {host!r} is not an address of this machine ({exc}); set serve.host to one, "
                        "e.g. 127.0.0.1 or 0.0.0.0 (every interface)") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy's server does
        try:
            sock.bind(address)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); set serve.port (--port) to a "
                            "free port, or stop what holds this one") from None


def run_serve(cfg: SteperConfig, block: bool = True, announce: Callable[[str], None] = print) -> dict[str, Any]:
    """Start (or update) the application on the connected Ray cluster and, with ``block``,
    keep it up until Ctrl-C / SIGTERM; ``announce`` shows the one line saying where it listens."""
    from ray import serve

    from steper_ray.ray_session import ensure_ray, started_here

    app = build_app(cfg)
    ensure_ray()
    s = cfg.serve
    if started_here():  # a fresh local Ray: no proxy of ours can hold the port yet
        check_can_listen(s.host, s.port)
    serve.start(http_options={"host": s.host, "port": s.port})
    serve.run(app, name=s.app_name, route_prefix=s.route_prefix)
    url = f"http://{s.host}:{s.port}{s.route_prefix.rstrip('/')}"
    log.info("serving on %s (POST /v1/answer, POST /v1/answer/stream, POST /v1/chat/completions, GET /v1/models, "
             "GET /healthz, GET /docs)", url)
    summary = {"command": "serve", "url": url, "app": s.app_name}
    if block:
        stop = threading.Event()
        before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            announce(f"steper-ray serve: listening on {url} (Ctrl-C to stop)")
            stop.wait()
        finally:
            for sig, handler in before.items():  # the caller's handlers again (the CLI's Ctrl-C handling)
                signal.signal(sig, handler)
        serve.delete(s.app_name)
        log.info("application %s deleted", s.app_name)
        announce(f"steper-ray serve: stopped (application {s.app_name!r} deleted)")
    return summary

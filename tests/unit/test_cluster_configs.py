"""Cluster launcher config, KubeRay manifests, job entrypoints and runtime environments: parsed,
required fields present, and every entrypoint and config they name exists in the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from steper_ray.config import load_config

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "cluster" / "kuberay"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _check_entrypoint(command: str) -> None:
    """`python jobs/X.py --config FILE ...`: the script exists, is a steper-ray entrypoint, and
    the config loads and validates."""
    argv = shlex.split(command)
    assert argv[0] == "python" and argv[1].startswith("jobs/"), command
    script = REPO / argv[1]
    assert script.is_file(), f"{argv[1]} does not exist"
    assert "from steper_ray.cli import main" in script.read_text()
    assert "--config" in argv, command
    config = REPO / argv[argv.index("--config") + 1]
    assert config.is_file(), f"{config} does not exist"
    load_config(config)


def test_launcher_config_has_a_cpu_head_and_autoscaled_gpu_groups() -> None:
    cfg = _load(REPO / "cluster" / "launcher.yaml")
    for key in ("cluster_name", "max_workers", "provider", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands", "idle_timeout_minutes"):
        assert key in cfg, key
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_groups = {name: t for name, t in types.items() if t.get("resources", {}).get("GPU")}
    assert set(gpu_groups) == {"teacher_gpu", "train_gpu", "index_gpu"}
    for name, group in gpu_groups.items():
        assert 0 <= group["min_workers"] <= group["max_workers"]
        assert group["resources"]["GPU"] == (1 if name == "index_gpu" else 8)
    assert sum(g["max_workers"] for g in gpu_groups.values()) <= cfg["max_workers"]
    cluster = load_config(REPO / "jobs" / "configs" / "cluster.yaml")
    # the teacher group fits the configured replicas at TP 4, the train group the workers
    teacher_tp = cluster.generate.teacher.tensor_parallel_size
    assert teacher_tp == 4
    assert gpu_groups["teacher_gpu"]["max_workers"] * 8 >= cluster.generate.replicas * teacher_tp
    assert gpu_groups["train_gpu"]["max_workers"] * 8 >= cluster.train.num_workers
    # one encoder actor per 1-GPU index node, with the CPUs it reserves
    build = cluster.index.build
    assert build.encoder_num_gpus == 1 and gpu_groups["index_gpu"]["max_workers"] >= build.encoders
    assert gpu_groups["index_gpu"]["resources"]["CPU"] >= build.encoder_num_cpus
    # the dashboard / job API listens on the head's localhost only
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])


@pytest.mark.parametrize("name", ["rayjob-generate.yaml", "rayjob-train.yaml"])
def test_rayjobs(name: str) -> None:
    job = _load(KUBERAY / name)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    _check_entrypoint(spec["entrypoint"])
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"], dict)
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"


def test_rayservice_serves_the_shipped_serve_config() -> None:
    svc = _load(KUBERAY / "rayservice.yaml")
    assert svc["apiVersion"] == "ray.io/v1" and svc["kind"] == "RayService"
    serve_cfg = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert serve_cfg == _load(REPO / "jobs" / "serve" / "cluster.yaml")
    from ray.serve.schema import ServeDeploySchema

    (app,) = ServeDeploySchema.model_validate(serve_cfg).applications
    assert app.import_path == "steper_ray.serve.app:app_builder"
    cfg = load_config(REPO / app.args["config"])
    assert cfg.serve.reasoner.num_gpus == 1 and cfg.serve.model is not None and cfg.serve.model.kind == "vllm"
    cluster = svc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    # one reasoner replica per one-GPU pod: the pod bounds cover the reasoner's autoscaling bounds
    assert group["maxReplicas"] >= cfg.serve.reasoner.autoscaling.max_replicas
    assert group["minReplicas"] <= cfg.serve.reasoner.autoscaling.min_replicas
    envs = [e["name"] for c in (cluster["headGroupSpec"]["template"]["spec"]["containers"]
                                + group["template"]["spec"]["containers"]) for e in c.get("env", [])]
    assert envs.count(cfg.serve.auth_token_env) == 2  # the token reaches every node


def test_every_job_entrypoint_named_in_docs_exists() -> None:
    texts = [p.read_text() for p in [REPO / "README.md", *sorted((REPO / "jobs").glob("*.py"))]]
    commands = {m for t in texts for m in re.findall(r"python (jobs/\w+\.py)", t)}
    assert commands, "no job commands found"
    for script in commands:
        assert (REPO / script).is_file(), script
    for script in (REPO / "jobs").glob("*.py"):
        _check_entrypoint(f"python jobs/{script.name} --config jobs/configs/local.yaml")


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_runtime_envs(name: str) -> None:
    env = _load(REPO / "jobs" / "runtime_env" / name)
    assert set(env) <= {"excludes", "env_vars", "pip", "working_dir", "py_modules"}
    assert all(isinstance(v, str) for v in env["env_vars"].values())  # Ray requires strings
    assert "runs/" in env["excludes"] and ".venv/" in env["excludes"]


def test_networkpolicy_keeps_the_dashboard_private() -> None:
    pol = _load(KUBERAY / "networkpolicy.yaml")
    assert pol["kind"] == "NetworkPolicy"
    open_ports = [p["port"] for rule in pol["spec"]["ingress"] for p in rule.get("ports", [])]
    assert open_ports == [8000]

"""Every file in cluster/ parses, and what it names agrees with the code: entry points exist, config
paths exist and load, resources asked for by the training and Serve configs fit the node groups."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest
import yaml

from fet.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBE = sorted((CLUSTER / "kuberay").glob("*.yaml"))


def load(path: Path) -> dict:
    assert path.read_text().startswith("#"), f"{path.name} opens with a comment saying how it is used"
    return yaml.safe_load(path.read_text())


def gpu_groups(cluster_spec: dict) -> list[dict]:
    return [g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in cluster_spec["workerGroupSpecs"]]


def check_entrypoint(entrypoint: str) -> None:
    """``python -m module --config F ...``: the module exists and F loads into that job's config."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"], entrypoint
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, f"{module}: no such module"
    if "--config" in argv:
        config = REPO / argv[argv.index("--config") + 1]
        assert config.is_file(), f"{config}: missing"
        if module == "ray_jobs.preprocess":
            from fet.data.preprocess import PreprocessConfig

            load_config(PreprocessConfig, config)
        elif module == "ray_jobs.evaluate":
            from fet.evaluation.config import EvalConfig

            cfg = load_config(EvalConfig, config, argv[argv.index("--config") + 2 :])
            groups = gpu_groups(load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"])
            assert cfg.ray.gpus_per_worker <= max(int(g.get("nvidia.com/gpu", 0)) for g in groups)
            assert cfg.ray.cpus_per_worker <= max(int(g["cpu"]) for g in groups)
        else:
            from fet.training.job_config import TrainJobConfig

            job = load_config(TrainJobConfig, config)
            job.validate()
            stage = module.removeprefix("ray_jobs.train_")
            assert job.stage == stage, f"{config} trains {job.stage}, the entry point {stage}"


@pytest.mark.parametrize("path", KUBE, ids=lambda p: p.name)
def test_kuberay_manifests(path):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob", "RayService")
    if doc["kind"] == "RayJob":
        check_entrypoint(doc["spec"]["entrypoint"])
        selector = doc["spec"]["clusterSelector"]["ray.io/cluster"]
        assert selector == load(CLUSTER / "kuberay" / "raycluster.yaml")["metadata"]["name"]
        if "ray_jobs.train_" in doc["spec"]["entrypoint"]:
            from fet.training.job_config import TrainJobConfig

            argv = shlex.split(doc["spec"]["entrypoint"])
            job = load_config(TrainJobConfig, REPO / argv[argv.index("--config") + 1])
            groups = gpu_groups(load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"])
            gpus = max(int(g.get("nvidia.com/gpu", 0)) for g in groups)
            assert job.scaling.use_gpu and job.scaling.gpus_per_worker <= gpus
            assert job.scaling.num_workers * job.scaling.gpus_per_worker <= gpus * 4  # the group's maxReplicas
    if doc["kind"] == "RayService":
        from serve.options import AppOptions

        serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
        app = serve_cfg["applications"][0]
        assert app["import_path"] == "serve.app:build_app"
        options = AppOptions(**app["args"])
        gpus = max(int(g.get("nvidia.com/gpu", 0)) for g in gpu_groups(doc["spec"]["rayClusterConfig"]))
        cpus = max(int(g["cpu"]) for g in gpu_groups(doc["spec"]["rayClusterConfig"]))
        for name in ("ingress", "encoder", "animator", "renderer"):
            s = getattr(options, name)
            assert s.num_gpus <= gpus and s.num_cpus <= cpus, name
        assert app["args"] == yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"][0]["args"]


def test_serve_config_builds_valid_options():
    from serve.options import AppOptions

    cfg = load(REPO / "serve" / "config.yaml")
    (app,) = cfg["applications"]
    module, attr = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert AppOptions(**app["args"]).renderer.num_gpus == 1


def test_aws_cluster_launcher():
    doc = load(CLUSTER / "aws.yaml")
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types and types[doc["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu and all("p4d" in t["node_config"]["InstanceType"] for t in gpu)  # A100 nodes
    assert all(t["node_config"]["IamInstanceProfile"]["Name"] for t in types.values())  # S3 by instance role
    setup = " ".join(doc["setup_commands"])
    assert '".[ray]"' in setup and "torch==2.13.0" in setup
    assert "ray start --head" in " ".join(doc["head_start_ray_commands"])
    from fet.training.job_config import TrainJobConfig

    for stage in ("stage1", "stage2", "audio", "stage3"):
        job = load_config(TrainJobConfig, REPO / f"configs/train/ray/{stage}_paper.yaml")
        fits = [t for t in gpu if t["resources"]["GPU"] >= job.scaling.gpus_per_worker
                and t["resources"]["CPU"] >= job.scaling.cpus_per_worker]  # fmt: skip
        assert fits, stage


def test_runtime_env_ships_the_source_only():
    env = load(CLUSTER / "runtime_env.yaml")
    assert env["working_dir"] == "." and {"/.venv/", "/data/", "/outputs/"} <= set(env["excludes"])


def test_dockerfile_installs_the_project():
    text = (CLUSTER / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir -e ".[ray]"' in text and "/opt/faceedittalker" in text
    for job in KUBE:
        doc = load(job)
        if doc["kind"] == "RayJob":
            assert "/opt/faceedittalker" in doc["spec"]["runtimeEnvYAML"]

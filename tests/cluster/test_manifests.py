"""The KubeRay manifests validate against KubeRay's CRD schemas (and use no key the
schemas lack); the RayService carries the same Serve config as `serve deploy`; the
`ray up` YAML passes Ray's own cluster schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from rayfolio.cluster.config import load_config
from rayfolio.serving.settings import settings_from_args

REPO = Path(__file__).resolve().parents[2]
# The shared KubeRay CRDs: KUBERAY_CRDS, else ../shared beside the checkout, else the workplace's.
CRDS = next(
    (p for p in (os.environ.get("KUBERAY_CRDS"), REPO.parent / "shared" / "kuberay-crds", "/work/shared/kuberay-crds")
     if p and Path(p).is_dir()),
    REPO.parent / "shared" / "kuberay-crds",
)  # fmt: skip
K8S = REPO / "cluster" / "k8s"
MANIFESTS = {"RayCluster": "raycluster.yaml", "RayJob": "rayjob.yaml", "RayService": "rayservice.yaml"}
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}  # fmt: skip


def crd_schema(kind: str) -> dict:
    path = Path(CRDS) / CRD_FILES[kind]
    if not path.is_file():
        pytest.skip(f"{path} is not here (the shared KubeRay CRDs sit beside the checkout)")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_keys(value, schema: dict, where: str = "") -> list[str]:
    """Keys the schema does not declare (structural schemas do not always forbid them)."""
    out = []
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") or "properties" not in schema:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for k, v in value.items():
                    out += unknown_keys(v, extra, f"{where}.{k}")
            return out
        for k, v in value.items():
            if k not in schema["properties"]:
                out.append(f"{where}.{k}")
            else:
                out += unknown_keys(v, schema["properties"][k], f"{where}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += unknown_keys(v, schema["items"], f"{where}[{i}]")
    return out


def manifest(kind: str) -> dict:
    return yaml.safe_load((K8S / MANIFESTS[kind]).read_text())


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_manifest_validates_against_the_kuberay_crd(kind):
    doc = manifest(kind)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    schema = crd_schema(kind)
    jsonschema.validate(doc, schema)
    assert unknown_keys(doc, schema) == []


def test_the_key_check_catches_a_misspelt_key():
    doc = manifest("RayCluster")
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert unknown_keys(doc, crd_schema("RayCluster")) == [".spec.workerGroupSpecs[0].maxReplica"]


def test_the_cluster_has_a_head_and_autoscaling_cpu_and_gpu_groups():
    spec = manifest("RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] and spec["rayVersion"] == ray.__version__
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert all(g["minReplicas"] < g["maxReplicas"] for g in groups.values())
    (gpu,) = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # The RayJob and the RayService run on the same cluster spec.
    assert manifest("RayJob")["spec"]["rayClusterSpec"] == spec
    assert manifest("RayService")["spec"]["rayClusterConfig"] == spec


def test_the_rayjob_runs_the_pipeline():
    job = manifest("RayJob")["spec"]
    assert job["entrypoint"].split()[:2] == ["rayfolio", "run"] and job["shutdownAfterJobFinishes"]
    assert yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]["RAYFOLIO_REGISTRY"].startswith("/home/ray/runs")


def test_the_rayservice_serves_the_same_serve_config():
    served = yaml.safe_load(manifest("RayService")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    local = yaml.safe_load((REPO / "cluster" / "serve_config.yaml").read_text())
    # The run config (split dates) from the image's copy of the repository under /home/ray.
    (args,) = [a["args"] for a in served["applications"]]
    assert args["run_config"] == f"rayfolio/{local['applications'][0]['args']['run_config']}"
    args["run_config"] = local["applications"][0]["args"]["run_config"]
    assert served["applications"] == local["applications"]
    assert served["http_options"] == {**local["http_options"], "host": "0.0.0.0"}  # the pod network
    settings_from_args(args, base=REPO)


def test_ray_up_yaml_passes_rays_cluster_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster" / "ray-up.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "local"
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])


def test_the_cluster_config_writes_to_the_shared_filesystem():
    config = load_config(REPO / "configs" / "cluster.yaml")
    assert config.runs_dir.is_absolute() and config.registry is not None and config.registry.is_absolute()
    assert config.model_dump(exclude={"runs_dir", "registry"}) == load_config(None).model_dump(
        exclude={"runs_dir", "registry"}
    )

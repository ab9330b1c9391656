"""The KubeRay manifests validate against KubeRay's CRD schemas (and use no key the
schemas lack); the RayService carries the same Serve config as `serve deploy`; the
`ray up` YAML passes Ray's own cluster schema; the daily CronJob creates a valid RayJob
on the long-lived cluster, and the plain `ray job submit` line parses with Ray's CLI and
its `rayfolio daily` part with rayfolio's."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

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


# ----- the daily job: a CronJob that creates a RayJob (cluster/k8s/daily-cronjob.yaml) ---------------

DAILY = K8S / "daily-cronjob.yaml"
CRON_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute, hour, day of month, month, day of week


def valid_cron(schedule: str) -> bool:
    """A standard 5-field cron schedule: each field ``*`` or numbers, ranges and lists in bounds, with
    an optional ``/step``."""
    fields = schedule.split()
    if len(fields) != 5:
        return False
    for field, (low, high) in zip(fields, CRON_FIELDS, strict=True):
        for part in field.split(","):
            match = re.fullmatch(r"(?:\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            if match is None:
                return False
            first, last, step = (int(g) if g is not None else None for g in match.groups())
            numbers = [n for n in (first, last) if n is not None]
            if any(not low <= n <= high for n in numbers) or (last is not None and last < first) or step == 0:
                return False
    return True


def test_the_cron_check_refuses_bad_schedules():
    assert valid_cron("30 17 * * 1-5") and valid_cron("*/15 0-6,22,23 1 1-12/2 0")
    for bad in ("30 17 * *", "60 17 * * 1-5", "30 24 * * *", "30 17 0 * *", "30 17 * * 8", "30 17 * * 5-1",
                "*/0 * * * *", "30 17 * * MON", "@daily"):  # fmt: skip
        assert not valid_cron(bad), bad


def daily_documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(DAILY.read_text())}


def daily_rayjob() -> dict:
    """The RayJob the CronJob's pod creates: the manifest in the ConfigMap it mounts."""
    return yaml.safe_load(daily_documents()["ConfigMap"]["data"]["rayjob.yaml"])


def test_the_daily_rayjob_validates_against_the_kuberay_crd():
    job = daily_rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    schema = crd_schema("RayJob")
    jsonschema.validate(job, schema)
    assert unknown_keys(job, schema) == []


def test_the_daily_rayjob_runs_on_the_long_lived_cluster_and_its_shared_volume():
    """clusterSelector, not a cluster of its own (which KubeRay deletes when the entrypoint ends,
    killing the retraining it submitted); the paths it names are on that cluster's runs volume or in
    the image's copy of the repository."""
    spec = daily_rayjob()["spec"]
    cluster = manifest("RayCluster")
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in spec and not spec.get("shutdownAfterJobFinishes")
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    runs = next(m["mountPath"] for m in head["volumeMounts"] if m["name"] == "runs")
    dashboard = next(p["containerPort"] for p in head["ports"] if p["name"] == "dashboard")
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["rayfolio", "daily"] and "--submit" in args and "--address" not in args
    for flag in ("--store", "--source"):
        assert args[args.index(flag) + 1].startswith(f"{runs}/"), flag
    image_repo = re.search(r"^COPY\s+(?:--\S+\s+)*\.\s+(\S+)", (REPO / "Dockerfile").read_text(), re.M).group(1)
    config = args[args.index("--config") + 1]
    assert config.startswith(f"{image_repo}/") and (REPO / config.removeprefix(f"{image_repo}/")).is_file()
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["RAYFOLIO_REGISTRY"] == f"{runs}/registry"
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{dashboard}"  # the driver runs on the head


def test_the_cronjob_creates_the_rayjob_daily_one_at_a_time_with_least_privilege():
    docs = daily_documents()
    cron = docs["CronJob"]
    assert (cron["apiVersion"], cron["kind"]) == ("batch/v1", "CronJob")
    assert valid_cron(cron["spec"]["schedule"]) and cron["spec"]["concurrencyPolicy"] == "Forbid"
    ZoneInfo(cron["spec"]["timeZone"])
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = docs["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (key,) = config_map["data"]
    assert f"kubectl create -f {mount['mountPath']}/{key}" in container["args"][0]
    assert f"name={daily_rayjob()['metadata']['name']}\n" in container["args"][0]
    # Its service account may create, read and delete RayJobs, and nothing else.
    account = docs["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    assert docs["Role"]["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                                      "verbs": ["create", "get", "delete"]}]  # fmt: skip
    binding = docs["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": docs["Role"]["metadata"]["name"]}  # fmt: skip


FAKE_KUBECTL = """#!/bin/sh
# kubectl for one RayJob: its status in $STATE (absent: no RayJob); every call logged to $CALLS.
echo "$*" >> "$CALLS"
case "$1 $2" in
  "get rayjob") [ -f "$STATE" ] || exit 1; case "$*" in *jsonpath*) cat "$STATE";; *) echo "rayjob/$3";; esac ;;
  "delete rayjob") rm -f "$STATE" ;;
  "create -f") grep -q "kind: RayJob" "$3" && [ ! -f "$STATE" ] && printf Initializing > "$STATE" ;;
  *) exit 2 ;;
esac
"""


@pytest.mark.parametrize(
    ("before", "created", "code"),
    [(None, True, 0), ("Complete", True, 0), ("Failed", True, 0), ("Running", False, 1)],
)
def test_the_cronjob_script_replaces_a_finished_rayjob_and_never_a_running_one(tmp_path, before, created, code):
    """The pod's script against a fake kubectl: no RayJob or a finished one -> today's is created;
    yesterday's still running -> nothing is touched and the pod fails."""
    container = daily_documents()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl").write_text(FAKE_KUBECTL)
    (tmp_path / "bin" / "kubectl").chmod(0o755)
    (tmp_path / "rayjob.yaml").write_text(daily_documents()["ConfigMap"]["data"]["rayjob.yaml"])
    state = tmp_path / "state"
    if before is not None:
        state.write_text(before)
    script = container["args"][0].replace(container["volumeMounts"][0]["mountPath"], str(tmp_path))
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "STATE": str(state), "CALLS": str(tmp_path / "calls")}
    done = subprocess.run([*container["command"], script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == code, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert any(c.startswith("create -f") for c in calls) == created
    assert any(c.startswith("delete rayjob") for c in calls) == (before in ("Complete", "Failed"))
    if created:
        assert state.read_text() == "Initializing" and calls[-1] == "get rayjob rayfolio-daily"
    else:
        assert state.read_text() == before and "is still Running" in done.stderr


def plain_ray_lines() -> dict[str, str]:
    """The `ray job submit` line for clusters without Kubernetes, where it is written down."""
    found = {}
    for path in (DAILY, REPO / "cluster" / "alerts" / "README.md"):
        (line,) = [x for x in path.read_text().splitlines() if "ray job submit " in x and "<" not in x]
        found[path.name] = line[line.index("ray job submit ") :]
    return found


def test_the_plain_ray_line_is_the_same_in_both_places_and_rays_cli_takes_it():
    from ray.dashboard.modules.job.cli import job_cli_group

    lines = plain_ray_lines()
    assert len(set(lines.values())) == 1, lines
    args = shlex.split(next(iter(lines.values())))
    params = job_cli_group.commands["submit"].make_context("submit", args[3:]).params
    assert params["address"] == "http://127.0.0.1:8265" and params["working_dir"] is None
    assert json.loads(params["runtime_env_json"])["env_vars"]["RAY_API_SERVER_ADDRESS"] == params["address"]
    assert list(params["entrypoint"][:4]) == ["python", "-m", "rayfolio.cluster.cli", "daily"]
    # cron runs it on the CronJob's schedule, in its time zone.
    cron = daily_documents()["CronJob"]["spec"]
    readme = (REPO / "cluster" / "alerts" / "README.md").read_text()
    assert f"# CRON_TZ={cron['timeZone']}\n# {cron['schedule']}  " in readme


def daily_commands() -> dict[str, list[str]]:
    """The `rayfolio daily` arguments of the RayJob's entrypoint and of the plain Ray line."""
    plain = shlex.split(next(iter(plain_ray_lines().values())))
    return {"rayjob": shlex.split(daily_rayjob()["spec"]["entrypoint"])[1:],
            "ray job submit": plain[plain.index("rayfolio.cluster.cli") + 1 :]}  # fmt: skip


@pytest.mark.parametrize("where", ["rayjob", "ray job submit"])
def test_the_daily_flags_parse_with_rayfolios_own_parser(where):
    from rayfolio.cluster.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "daily" not in commands.choices:
        pytest.skip("`rayfolio daily` is not registered yet (cluster/commands/daily.py, the lead's)")
    args = parser.parse_args(daily_commands()[where])
    assert args.command == "daily" and args.submit and args.address is None
    assert args.store.is_absolute() and args.config.is_absolute() and Path(args.source).is_absolute()

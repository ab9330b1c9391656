"""Training jobs over HTTP: a real backtest job on the served tiny app's own Ray (its dashboard is the
job server) followed to SUCCEEDED with its metrics, a job stopped, everything audited; requests that
would run anything but an allowed command with server-chosen paths refused with the field named. The
catalog and the entrypoint building are checked without Ray."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from bench.tiny_market import ADMIN, RUN_CONFIG, SPLITS, USER, auth, serve_tiny, tiny_settings
from rayfolio.cluster.config import load_config
from rayfolio.serving.audit import AuditLog
from rayfolio.serving.errors import RequestError
from rayfolio.serving.jobs import COMMANDS, JobRequest, catalog, named_config, plan_job, uploaded_config
from rayfolio.serving.settings import ServeSettings

TINY = RUN_CONFIG
REQUEST = TypeAdapter(JobRequest)


def settings_at(root: Path, **overrides) -> ServeSettings:
    """Settings that name paths only (nothing is read): for the checks without Ray."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    paths = {"jobs_dir": root / "jobs", "job_configs": root / "configs"} | overrides
    return ServeSettings(store=root / "a store", registry=root / "registry", splits=SPLITS, audit_url="sqlite://",
                         **paths)  # fmt: skip


# ----- without Ray -------------------------------------------------------------------------------


def test_the_catalog_describes_each_command_for_a_form(tmp_path):
    out = catalog(settings_at(tmp_path))
    assert [c["command"] for c in out["commands"]] == ["run", "train", "backtest", "data-append"] == list(COMMANDS)
    assert out["configs"] == ["quickstart", "tiny"] and out["families"] == ["lstm", "transformer", "gat"]
    train = next(c for c in out["commands"] if c["command"] == "train")["schema"]
    assert train["additionalProperties"] is False and train["required"] == ["command", "family"]
    samples = train["properties"]["samples"]["anyOf"][0]
    assert (samples["minimum"], samples["maximum"]) == (1, 64)
    # Without a configs folder: the built-in quickstart only (a plain install has no configs/).
    assert catalog(settings_at(tmp_path, job_configs=None))["configs"] == ["quickstart"]


def test_the_entrypoint_is_built_by_the_server_from_the_typed_request(tmp_path):
    settings = settings_at(tmp_path)
    request = REQUEST.validate_python({"command": "train", "family": "gat", "config": "tiny", "samples": 3,
                                       "epochs": 2})  # fmt: skip
    plan = plan_job(request, settings, "rayfolio-train-0123456789ab")
    job = (tmp_path / "jobs" / "rayfolio-train-0123456789ab").resolve()
    store, registry = str((tmp_path / "a store").resolve()), str((tmp_path / "registry").resolve())
    words = shlex.split(plan.entrypoint)
    assert words[:3] == ["cd", str(job), "&&"]  # the store's space survived quoting: one word each
    assert words[3:] == ["exec", sys.executable, "-m", "rayfolio.cluster.cli", "train", "--family", "gat",
                         "--config", str(job / "config.yaml"), "--store", store, "--registry", registry,
                         "--out", str(job / "train")]  # fmt: skip
    assert plan.summary.startswith("rayfolio train --family gat --config <job>/config.yaml --store '<store>'")
    assert plan.metrics == "train/summary.json"
    # The config the job reads: the named one, the overrides merged, every path the server's.
    config = plan.config
    assert config.forecasters.search.num_samples == 3 and config.forecasters.train.epochs == 2
    assert config.splits == SPLITS and config.runs_dir == job and str(config.registry) == registry
    assert config.ray.address is None  # the job's own RAY_ADDRESS: the service's cluster
    plan.write()  # what the job's `rayfolio train --config` reads back: the same config
    assert load_config(job / "config.yaml") == config
    assert named_config(settings, "tiny").forecasters.search.num_samples == 1  # the file itself is left alone
    append = plan_job(REQUEST.validate_python({"command": "data-append", "end": "2022-12-28"}), settings,
                      "rayfolio-data-append-0123456789ab")  # fmt: skip
    assert append.argv == ("data", "append", store, "--source", "sp500", "--end", "2022-12-28")
    assert append.config is None and append.metrics is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"command": "shell", "argv": ["rm"]}, "'command'"),
        ({"command": "train", "family": "lstm", "env": {"A": "1"}}, "env: Extra inputs are not permitted"),
        ({"command": "backtest", "runtime_env": {}}, "runtime_env: Extra inputs are not permitted"),
        ({"command": "run", "config": "../../etc/passwd"}, "config: String should match pattern"),
        ({"command": "run", "config": "/abs/path"}, "config: String should match pattern"),
        ({"command": "train", "family": "mlp"}, "family: Input should be"),
        ({"command": "train", "family": "lstm", "samples": 10_000}, "samples: Input should be less than"),
        ({"command": "data-append", "source": "/data/prices.csv"}, "source: Input should be 'sp500'"),
    ],
)
def test_requests_outside_the_allowed_set_are_refused_naming_the_field(body, fragment):
    with pytest.raises(ValidationError) as raised:
        REQUEST.validate_python(body)
    first = raised.value.errors()[0]
    where = ".".join(map(str, first["loc"]))
    assert fragment in f"{where}: {first['msg']}" or fragment in first["msg"], (where, first["msg"])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"splits": {"train_end": "not a day"}}, "config_yaml: splits.train_end: Input should be a valid date"),
        ({"forecasters": {"search": {"num_samples": 0}}}, "config_yaml: forecasters.search.num_samples: "),
        ({"surprise": 1}, "config_yaml: surprise: Extra inputs are not permitted"),
        ({"runs_dir": "/tmp"}, "config_yaml: runs_dir: chosen by the server"),
        ({"registry": "/tmp/r"}, "config_yaml: registry: chosen by the server"),
        ({"ray": {"address": "ray://elsewhere:10001"}}, "config_yaml: ray: chosen by the server"),
        ({"name": "../../outside"}, "config_yaml: name: letters, digits"),
        ({"data": {"source": "/etc/passwd"}}, "config_yaml: data.source: an uploaded config takes sp500 or synthetic"),
        ({"allocation": {"backtest": {"index": "/etc/hosts"}}}, "config_yaml: allocation.backtest.index"),
    ],
)
def test_an_uploaded_config_is_validated_before_anything_runs(change, fragment):
    with pytest.raises(RequestError) as raised:
        uploaded_config(yaml.safe_dump(_merged(TINY, change)))
    assert str(raised.value).startswith(fragment) and raised.value.status == 422, str(raised.value)
    assert uploaded_config(yaml.safe_dump(TINY)).splits == SPLITS
    with pytest.raises(RequestError, match=r"^config_yaml: not valid YAML at line 1$"):
        uploaded_config("splits: [unclosed")


def _merged(base: dict, change: dict) -> dict:
    return {**base, **{k: _merged(base[k], v) if isinstance(base.get(k), dict) else v for k, v in change.items()}}


# ----- on the served tiny app --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from ray import serve

    root = tmp_path_factory.mktemp("jobs")
    (root / "configs").mkdir()
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    settings = tiny_settings(root, jobs_dir=root / "jobs", job_configs=root / "configs")
    client = serve_tiny(settings)
    yield client, settings
    client.close()
    serve.shutdown()


def _until(client, job_id: str, statuses: set[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(ADMIN)).json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_jobs_need_an_admin_key(served):
    client, _ = served
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/jobs/catalog"), ("POST", "/v1/jobs")):
        assert client.request(method, path, json={"command": "backtest"}).status_code == 401
        user = client.request(method, path, json={"command": "backtest"}, headers=auth(USER))
        assert user.status_code == 403 and user.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"command": "bash", "script": "id"}, "'command'"),
        ({"command": "backtest", "config": "tiny", "out": "/tmp"}, "backtest.out: Extra inputs are not permitted"),
        ({"command": "backtest", "config": "../configs/tiny"}, "backtest.config: String should match pattern"),
        ({"command": "backtest", "config": "nope"}, "config: no run config named 'nope' (have: quickstart, tiny)"),
        ({"command": "run", "config_yaml": "splits: {train_end: someday}"}, "config_yaml: splits.train_end"),
    ],
)
def test_refused_submissions_answer_422_naming_the_field(served, body, fragment):
    client, settings = served
    r = client.post("/v1/jobs", json=body, headers=auth(ADMIN))
    assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text
    assert not settings.jobs_dir.exists()  # nothing written (these run before any job is submitted)


def test_a_backtest_job_runs_to_its_metrics_and_a_stopped_job_stops(served):
    client, settings = served
    assert client.get("/v1/jobs/catalog", headers=auth(ADMIN)).json()["configs"] == ["quickstart", "tiny"]
    started = time.perf_counter()
    r = client.post("/v1/jobs", json={"command": "backtest", "config": "tiny"}, headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["command"] == "backtest" and job["status"] == "PENDING" and len(job["submitted_by"]) > 0
    # A second job (a whole run, from an uploaded config) stopped while it starts.
    upload = client.post("/v1/jobs", json={"command": "run", "config_yaml": yaml.safe_dump(TINY)}, headers=auth(ADMIN))
    assert upload.status_code == 201, upload.text
    run_id = upload.json()["job_id"]
    stop = client.post(f"/v1/jobs/{run_id}/stop", headers=auth(ADMIN))
    assert stop.status_code == 200 and stop.json()["stopped"] is True, stop.text
    assert _until(client, run_id, {"STOPPED", "FAILED", "SUCCEEDED"}, 60)["status"] == "STOPPED"

    done = _until(client, job["job_id"], {"SUCCEEDED", "FAILED", "STOPPED"}, 240)
    elapsed = time.perf_counter() - started
    print(f"backtest job: {done['status']} {elapsed:.1f} s after submission")
    logs = client.get(f"/v1/jobs/{job['job_id']}/logs", params={"tail": 3}, headers=auth(ADMIN)).json()
    assert done["status"] == "SUCCEEDED", (done, logs)
    assert done["entrypoint"] == ("rayfolio backtest --config <job>/config.yaml --store <store> --registry <registry> "
                                  "--out <job>/backtest")  # fmt: skip
    assert set(done["metrics"]) >= {"ppo", "equal_weight", "served_balanced"}
    assert done["metrics"]["equal_weight"]["days"] > 100
    assert dt.datetime.fromisoformat(done["end_time"]) >= dt.datetime.fromisoformat(done["start_time"])
    assert len(logs["lines"]) == 3 and logs["lines"][-1].startswith("report: ")
    assert client.get(f"/v1/jobs/{job['job_id']}/logs", params={"tail": 0}, headers=auth(ADMIN)).status_code == 422

    listed = client.get("/v1/jobs", headers=auth(ADMIN)).json()["jobs"]
    assert [j["job_id"] for j in listed] == [run_id, job["job_id"]]  # newest first, only this service's
    unknown = client.get("/v1/jobs/rayfolio-run-000000000000", headers=auth(ADMIN))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert (settings.jobs_dir / job["job_id"] / "backtest" / "metrics.json").is_file()

    log = AuditLog(settings.audit_url, secret=b"audit-secret")
    submitted, records = log.get(job["job_id"]), log.records(limit=1000)
    assert submitted.kind == "job_submitted" and submitted.key_id == job["submitted_by"]
    assert submitted.payload["request"] == {"command": "backtest", "config": "tiny", "config_yaml": None}
    assert [(r.request_id.split(":")[0], r.kind) for r in records if r.kind.startswith("job_")] == [
        (job["job_id"], "job_submitted"), (run_id, "job_submitted"), (run_id, "job_stopped")]  # fmt: skip
    assert records[-1].payload == {"job_id": run_id, "stopped": True, "status": stop.json()["status"]}
    assert log.verify().ok

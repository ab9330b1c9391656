"""Training jobs over HTTP: an allowed set of rayfolio commands, submitted as Ray jobs on the service's
own cluster through the Job Submission API (routes: serving/jobs_routes.py).

What runs is decided here, never by the request: a request is a typed choice (``run``, ``train``,
``backtest``, ``data-append``) with typed fields; the entrypoint is built by the server from it
(``<this interpreter> -m rayfolio.cluster.cli <command> ...``, every value server-chosen and
shell-quoted), the run config comes from the operator's named configs or an uploaded YAML validated
against the typed ``RunConfig`` before submission, and every path (the job's output directory under
``jobs_dir``, the served feature store and registry) is the server's. No command text, path,
environment variable or runtime_env ever comes from the request.

A job's files (its run config, its outputs) live under ``jobs_dir/<job_id>/``: on a cluster of more
than one node that is storage every node reaches, like ``runs_dir``. The jobs this service submitted
carry its ``jobs_dir`` in their metadata: the list shows those only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rayfolio.cluster.config import RayConfig, RunConfig
from rayfolio.serving.errors import RequestError
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.config import Family

FAMILIES = get_args(Family)
BUILT_IN = "quickstart"  # the run config `rayfolio run` uses with no --config: RunConfig's defaults
CONFIG_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # a bare name: no dot, no slash, never a path
JOB_ID = r"^rayfolio-[a-z-]{1,16}-[0-9a-f]{12}$"
SERVICE_TAG = "rayfolio_jobs_dir"  # metadata: which service's jobs_dir a job belongs to
MAX_YAML = 32 * 1024
# Run config sections an uploaded YAML may not set: the server chooses where a job reads and writes
# and which cluster it runs on.
SERVER_CHOSEN = ("runs_dir", "registry", "ray")
# Uploaded configs name data by kind only: a file path or URI would read whatever the cluster can reach.
UPLOAD_SOURCES = ("sp500", "synthetic")


class JobError(RuntimeError):
    """The job server cannot be reached or refused a call: the service answers 503."""


# ----- the requests ------------------------------------------------------------------------------


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Configured(_Job):
    """A run config: one of the operator's named configs (``GET /v1/jobs/catalog`` lists them), or an
    uploaded YAML validated against the typed run config. Neither: the built-in quickstart."""

    config: str | None = Field(None, pattern=CONFIG_NAME, description="a named run config (see the catalog)")
    config_yaml: str | None = Field(
        None, min_length=1, max_length=MAX_YAML, description="a run config as YAML text, instead of a named one"
    )

    @model_validator(mode="after")
    def _one_config(self) -> _Configured:
        if self.config is not None and self.config_yaml is not None:
            raise ValueError("config, config_yaml: give one of them, not both")
        return self


class RunJob(_Configured):
    """``rayfolio run``: every stage end to end; the forecasters land in the served registry as staging."""

    command: Literal["run"]


class TrainJob(_Configured):
    """``rayfolio train``: one forecaster family searched on the served feature store and registered
    (production if the family has none yet, else staging)."""

    command: Literal["train"]
    family: Family
    samples: int | None = Field(None, ge=1, le=64, description="configurations to try (the config's search)")
    epochs: int | None = Field(None, ge=1, le=200, description="epochs per configuration (the config's train)")


class BacktestJob(_Configured):
    """``rayfolio backtest``: the served registry's production agents against the baselines, on the
    served feature store."""

    command: Literal["backtest"]


class DataAppendJob(_Job):
    """``rayfolio data append``: new bars of the embedded S&P 500 sample onto the served feature store."""

    command: Literal["data-append"]
    source: Literal["sp500"] = "sp500"
    start: dt.date | None = Field(None, description="use only bars dated on or after this day")
    end: dt.date | None = Field(None, description="use only bars dated on or before this day")


JOB_MODELS = (RunJob, TrainJob, BacktestJob, DataAppendJob)
JobRequest = Annotated[RunJob | TrainJob | BacktestJob | DataAppendJob, Field(discriminator="command")]
COMMANDS = tuple(get_args(m.model_fields["command"].annotation)[0] for m in JOB_MODELS)


# ----- named configs -------------------------------------------------------------------------------


def config_names(settings: ServeSettings) -> list[str]:
    """The named run configs: the built-in quickstart and every ``*.yaml`` in ``job_configs``."""
    folder = settings.job_configs
    files = sorted(p.stem for p in folder.glob("*.yaml") if _is_name(p.stem)) if folder is not None else []
    return sorted({BUILT_IN, *files})


def _is_name(text: str) -> bool:
    return re.fullmatch(CONFIG_NAME, text) is not None


def named_config(settings: ServeSettings, name: str) -> RunConfig:
    """A named config (the operator's file of that name, else the built-in quickstart)."""
    path = settings.job_configs / f"{name}.yaml" if settings.job_configs is not None else None
    if path is not None and path.is_file():
        return _validated(_yaml_mapping(path.read_text(), "config"), "config")
    if name == BUILT_IN:
        return RunConfig()
    raise RequestError(
        "invalid_request", f"config: no run config named {name!r} (have: {', '.join(config_names(settings))})"
    )


def uploaded_config(text: str) -> RunConfig:
    """An uploaded run config: the typed RunConfig's rules, then the ones for uploads (no path chosen by
    the request), each error naming the field."""
    raw = _yaml_mapping(text, "config_yaml")
    for key in SERVER_CHOSEN:
        if key in raw:
            raise RequestError("invalid_request", f"config_yaml: {key}: chosen by the server, leave it out")
    config = _validated(raw, "config_yaml")
    if not _is_name(config.name):  # the run's directory under the job's: a bare name, never a path
        raise RequestError(
            "invalid_request", f"config_yaml: name: letters, digits, _ and - only, got {config.name[:40]!r}"
        )
    if config.data.source not in UPLOAD_SOURCES:
        raise RequestError("invalid_request",
                           f"config_yaml: data.source: an uploaded config takes {' or '.join(UPLOAD_SOURCES)} "
                           "(files are read through the operator's named configs)")  # fmt: skip
    backtest = config.allocation.backtest
    if backtest.index not in (None, "auto", "sp500"):
        raise RequestError("invalid_request", "config_yaml: allocation.backtest.index: auto, sp500 or null")
    if backtest.serve_config is not None:
        raise RequestError("invalid_request", "config_yaml: allocation.backtest.serve_config: leave it out")
    return config


def _yaml_mapping(text: str, where: str) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise RequestError("invalid_request", f"{where}: not valid YAML{at}") from None
    if not isinstance(raw, dict):
        raise RequestError("invalid_request", f"{where}: a run config is a YAML mapping of sections")
    return raw


def _validated(raw: dict, where: str) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(map(str, first["loc"])) or "(top)"
        raise RequestError("invalid_request", f"{where}: {key}: {first['msg'].removeprefix('Value error, ')}") from None


# ----- what runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobPlan:
    """One job as the server decided it: its id, command line and files."""

    job_id: str
    command: str
    directory: Path  # jobs_dir/<job_id>: the job's working directory and outputs
    argv: tuple[str, ...]  # after `rayfolio`
    config: RunConfig | None  # written to directory/config.yaml before submission
    metrics: str | None  # the file (relative to directory) holding the job's metrics when it succeeds
    summary: str  # the command line with the service's paths named, for listings

    @property
    def entrypoint(self) -> str:
        # The interpreter that runs this replica has rayfolio installed (Serve runs it here); the job's
        # relative paths, if any, resolve in its own directory.
        command = shlex.join([sys.executable, "-m", "rayfolio.cluster.cli", *self.argv])
        return f"cd {shlex.quote(str(self.directory))} && exec {command}"

    def write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=False)
        if self.config is not None:
            plain = json.loads(self.config.model_dump_json())
            (self.directory / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))


def jobs_dir(settings: ServeSettings) -> Path:
    """Where job outputs go: ``jobs_dir``, else ``jobs/`` beside the report's run directory."""
    return (settings.jobs_dir or settings.report_dir.parent / "jobs").resolve()


def new_job_id(command: str) -> str:
    return f"rayfolio-{command}-{uuid.uuid4().hex[:12]}"


def plan_job(request: BaseModel, settings: ServeSettings, job_id: str) -> JobPlan:
    """The job for a validated request: its run config checked (422 naming the field) and every
    path chosen here."""
    directory = jobs_dir(settings) / job_id
    store, registry = str(settings.store.resolve()), str(settings.registry.resolve())
    config = None
    if isinstance(request, _Configured):
        config = uploaded_config(request.config_yaml) if request.config_yaml is not None else (
            named_config(settings, request.config or BUILT_IN))  # fmt: skip
        update: dict = {"runs_dir": str(directory), "registry": registry, "ray": RayConfig().model_dump()}
        if isinstance(request, TrainJob):
            forecasters = {"search": {"num_samples": request.samples}, "train": {"epochs": request.epochs}}
            update["forecasters"] = {k: {f: v for f, v in s.items() if v is not None} for k, s in forecasters.items()}
        config = _validated(_merged(json.loads(config.model_dump_json()), update), "config")
    given = ["--config", str(directory / "config.yaml")]
    served = ["--store", store, "--registry", registry]
    match request:
        case RunJob():  # its own feature store from the config's source; a retraining for review
            argv, metrics = ["run", *given, "--stage", "staging"], f"{config.name}/metrics.json"
        case TrainJob():
            argv = ["train", "--family", request.family, *given, *served, "--out", str(directory / "train")]
            metrics = "train/summary.json"
        case BacktestJob():
            argv, metrics = ["backtest", *given, *served, "--out", str(directory / "backtest")], "backtest/metrics.json"
        case DataAppendJob():
            window = [x for flag, day in (("--start", request.start), ("--end", request.end)) if day
                      for x in (flag, day.isoformat())]  # fmt: skip
            argv, metrics = ["data", "append", store, "--source", request.source, *window], None
        case _:
            raise RequestError("invalid_request", f"command: one of {', '.join(COMMANDS)}")
    named = {str(directory): "<job>", store: "<store>", registry: "<registry>"}
    summary = shlex.join(["rayfolio", *argv])
    for path, name in named.items():
        summary = summary.replace(path, name)
    return JobPlan(job_id, request.command, directory, tuple(argv), config, metrics, summary)


def _merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        inner = out.get(key)
        out[key] = _merged(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return out


def catalog(settings: ServeSettings) -> dict:
    """What a form needs: each command with its JSON schema (fields, limits, defaults), the named
    configs and the forecaster families."""
    return {
        "commands": [
            {
                "command": c,
                "summary": (m.__doc__ or "").split("\n\n")[0].replace("\n", " "),
                "schema": m.model_json_schema(),
            }
            for c, m in zip(COMMANDS, JOB_MODELS, strict=True)
        ],
        "configs": config_names(settings),
        "families": list(FAMILIES),
    }


# ----- the job server ------------------------------------------------------------------------------


class Jobs:
    """The service's jobs on its Ray job server (sync: the routes call it in a thread)."""

    def __init__(self, settings: ServeSettings, audit) -> None:
        self.settings, self.audit = settings, audit
        self.tag = str(jobs_dir(settings))
        self._client, self._lock = None, threading.Lock()

    def client(self):
        """A client of the job server: ``jobs_address``, else the dashboard of the cluster this
        process runs on (its GCS knows the address; the token comes from the cluster's environment,
        as for any of its workers)."""
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                address = self.settings.jobs_address or _cluster_job_server()
                try:
                    self._client = JobSubmissionClient(address)
                except Exception as err:  # refused, bad token, not a dashboard
                    raise JobError(f"the Ray job server at {address} cannot be reached: {_first_line(err)}") from None
            return self._client

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self.client(), method)(*args, **kwargs)
        except JobError:
            raise
        except Exception as err:
            if "status code 404" in str(err):
                raise RequestError("not_found", f"no job {args[0]!r}", 404) from None
            with self._lock:
                self._client = None  # found again next time (a restarted head, a moved dashboard)
            hint = ""
            if "No available agent" in str(err):  # the head node's dashboard agent runs the jobs
                hint = (" (the head node's dashboard agent is not up: see its dashboard_agent.log; another Ray on "
                        "the machine may hold its port, 52365 by default)")  # fmt: skip
            raise JobError(f"the Ray job server failed: {_first_line(err)}{hint}") from None

    def submit(self, request: BaseModel, key_id: str) -> dict:
        plan = plan_job(request, self.settings, new_job_id(request.command))
        plan.write()
        submitted_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        metadata = {SERVICE_TAG: self.tag, "command": plan.command, "submitted_by": key_id,
                    "submitted_at": submitted_at, "summary": plan.summary, "metrics": plan.metrics or ""}  # fmt: skip
        self._call("submit_job", entrypoint=plan.entrypoint, submission_id=plan.job_id, metadata=metadata)
        payload = {"command": plan.command, "request": request.model_dump(mode="json"), "entrypoint": plan.summary}
        try:
            self.audit.append(key=key_id, request_id=plan.job_id, kind="job_submitted", payload=payload)
        except Exception:  # no job runs unaudited
            self._call("stop_job", plan.job_id)
            raise
        return {"job_id": plan.job_id, "command": plan.command, "status": "PENDING", "submitted_at": submitted_at,
                "submitted_by": key_id}  # fmt: skip

    def list(self) -> list[dict]:
        ours = [
            j for j in self._call("list_jobs") if j.submission_id and (j.metadata or {}).get(SERVICE_TAG) == self.tag
        ]
        ours.sort(key=lambda j: (j.start_time or 0, j.submission_id), reverse=True)
        return [_row(j) for j in ours]

    def info(self, job_id: str):
        job = self._call("get_job_info", job_id)
        if (job.metadata or {}).get(SERVICE_TAG) != self.tag:  # another service's (or a CLI's) job
            raise RequestError("not_found", f"no job {job_id!r}", 404)
        return job

    def get(self, job_id: str) -> dict:
        job = self.info(job_id)
        metadata = job.metadata or {}
        metrics = None
        if _status(job) == "SUCCEEDED" and metadata.get("metrics"):
            path = Path(self.tag) / job_id / metadata["metrics"]
            if path.is_file():
                metrics = json.loads(path.read_text())
        return {**_row(job), "message": job.message, "entrypoint": metadata.get("summary"), "metrics": metrics}

    def logs(self, job_id: str, tail: int) -> dict:
        self.info(job_id)
        text = self._call("get_job_logs", job_id)
        return {"job_id": job_id, "lines": text.splitlines()[-tail:]}

    def stop(self, job_id: str, key_id: str) -> dict:
        self.info(job_id)
        stopped = bool(self._call("stop_job", job_id))
        status = _status(self.info(job_id))
        # Its own record id (the submission holds the job's id; audit ids are unique): one per stop asked.
        record_id = f"{job_id}:stop:{uuid.uuid4().hex[:8]}"
        payload = {"job_id": job_id, "stopped": stopped, "status": status}
        self.audit.append(key=key_id, request_id=record_id, kind="job_stopped", payload=payload)
        return {"job_id": job_id, "stopped": stopped, "status": status}


def _cluster_job_server() -> str:
    import ray

    if not ray.is_initialized():
        raise JobError("no Ray job server: this service runs outside Ray; set jobs_address in the serve settings")
    from ray.dashboard.utils import get_address_for_submission_client

    # The GCS stores the dashboard's address (the job server); the runtime context names the GCS.
    return get_address_for_submission_client(ray.get_runtime_context().gcs_address)


def _status(job) -> str:
    return getattr(job.status, "value", str(job.status))


def _when(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _row(job) -> dict:
    metadata = job.metadata or {}
    return {"job_id": job.submission_id, "command": metadata.get("command"), "status": _status(job),
            "start_time": _when(job.start_time), "end_time": _when(job.end_time),
            "submitted_by": metadata.get("submitted_by")}  # fmt: skip


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]

"""Training jobs over HTTP: an allowed set of rayfolio commands, submitted as Ray jobs on the service's
own cluster through the Job Submission API (the client: serving/job_server.py; routes: serving/jobs_routes.py).

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

"""What the service loads and how it guards itself: ``ServeSettings``, plain values shipped to
every replica, read from the Serve config YAML (cluster/serve_config.yaml) that both
``serve deploy`` and ``rayfolio serve`` take."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayfolio.data.splits import SplitConfig
from rayfolio.data.yaml_files import read_yaml_mapping
from rayfolio.serving.risk import HouseLimits


class SettingsError(ValueError):
    """A serve config or run config that cannot be used: names the file and the key."""


class Autoscaling(BaseModel):
    """One deployment's replicas: autoscaling bounds and CPU share. Fractional CPUs
    let the whole app (at its maximum) fit a 2-core machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    num_cpus: float = Field(0.25, gt=0)
    # How often the controller checks each replica: a dead one is noticed and replaced within
    # about this long (Serve's default, 10 s, leaves a crashed replica unreplaced for longer).
    health_check_period_s: float = Field(2.0, gt=0)

    def options(self, max_ongoing_requests: int, **actor_options) -> dict:
        return {
            "autoscaling_config": self.model_dump(exclude={"num_cpus", "health_check_period_s"}),
            "health_check_period_s": self.health_check_period_s,
            "max_ongoing_requests": max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, **actor_options},
        }


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Path
    registry: Path
    splits: SplitConfig  # the run's: the explainer's background and the allocator's training window
    audit_url: str
    # A registered allocator (ppo-allocator, sac-allocator, tilt-allocator) or "best": the production
    # one with the best validation Sharpe after costs, the one the main job's served path replays.
    allocator: str = "best"
    # Where the policy and the risk filters run for a recommendation. "ingress": in the
    # ingress replica, so a date whose forecasts are cached costs no handle hop (each hop
    # costs ~5 ms of CPU on this 2-core machine; bench/serve_load.py measures both).
    # "deployments": in the Allocator and RiskFilter deployments, each scaled on its own
    # (e.g. a large policy on GPU workers of a cluster).
    placement: Literal["ingress", "deployments"] = "ingress"
    # What runs the LSTM and Transformer forecasters in the Ensemble: torch, or their exported ONNX
    # graphs (`rayfolio models export`; fp32 or int8) in ONNX Runtime, one intra-op thread per replica.
    # The production versions must have been exported; a GAT always runs in torch.
    forecaster_runtime: Literal["torch", "onnx", "onnx-int8"] = "torch"
    house_limits: HouseLimits = HouseLimits()
    # An experiment (A/B, canary: serving/experiments.py ExperimentConfig fields) in the Ingress's
    # user_config beside the house limits: `serve deploy` changes it live; None: no experiment.
    experiment: dict | None = None
    rate_per_key: float = Field(50.0, gt=0)  # requests per second per key, per ingress replica
    burst_per_key: int = Field(100, ge=1)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # Admission: requests one ingress replica works on at once (they wait in its batches); more
    # are answered 503 + Retry-After in the JSON error model at once. The service's capacity is
    # ingress replicas x this (bench/serve_load.py: 64 clients on one replica all answered).
    max_in_flight: int = Field(64, ge=1)
    retry_after_s: float = Field(1.0, gt=0)
    # Serve's own limits, a last-resort backstop above the app's admission. Each request the proxy
    # forwards costs it a hop into a replica, shed or not; past what it can forward its backlog grows
    # without bound (bench/serve_overload.py: 4x 32 per replica + 128 queued left 642 of ~8,300
    # requests unanswered, service back after 27 s). So Serve lets only ``serve_headroom`` requests
    # past max_in_flight reach a replica (the app sheds those with its JSON 503) and queues at most
    # ``serve_max_queued`` in its proxy; beyond that the proxy answers its own 503 (plain text,
    # Retry-After) without a hop. The figures measured: cluster/serve_config.yaml.
    serve_headroom: int = Field(8, ge=1)
    serve_max_queued: int = Field(32, ge=1)
    insecure_dev: bool = False  # no keys: every request is an anonymous admin (local dev only)
    ingress: Autoscaling = Autoscaling(max_replicas=2)
    ensemble: Autoscaling = Autoscaling(num_cpus=0.5)
    allocator_scaling: Autoscaling = Autoscaling(max_replicas=2)
    risk_filter: Autoscaling = Autoscaling()
    explainer: Autoscaling = Autoscaling(num_cpus=0.25)
    # The forecast explanations (explain/expected_gradients.py): samples (rounded up to a multiple of
    # the background) and training dates in the background. Changing either keys a new store.
    explain_samples: int = Field(128, ge=10)
    explain_background: int = Field(16, ge=2)
    # Where they are stored per date (explain/store.py; None: <store's parent>/explanations), and
    # whether they are looked up there (False: computed per request and not stored).
    explanations: Path | None = None
    explain_precomputed: bool = True
    # The policy's part, computed per request for the assets held or traded: ~40 ms for 20 assets.
    policy_samples: int = Field(128, ge=4)
    policy_background: int = Field(16, ge=2)
    # The run whose backtest output (metrics.json, returns.parquet: DESIGN.md) the console shows and goal
    # plans resample; None: the store's parent (a run directory: runs/<name>/features -> runs/<name>).
    run_dir: Path | None = None
    # Training jobs over HTTP (serving/jobs.py): the Ray job server (None: the dashboard of the cluster
    # this replica runs on, found at run time), where job outputs go (None: jobs/ beside the run
    # directory; on a multi-node cluster, storage every node reaches) and a folder of named run configs
    # (<name>.yaml) jobs may use beside the built-in quickstart (None: the quickstart only).
    jobs_address: str | None = None
    jobs_dir: Path | None = None
    job_configs: Path | None = None
    # How often each serving object checks the feature store's manifest for an appended version
    # (serving/data_watch.py): a new day reaches every replica within about this long.
    data_poll_s: float = Field(5.0, gt=0)

    @property
    def report_dir(self) -> Path:
        """The run directory holding the backtest output (``run_dir``, else the store's parent)."""
        return self.run_dir if self.run_dir is not None else self.store.parent

    @property
    def capacity(self) -> int:
        """Requests the service works on at once at its largest: past this it sheds."""
        return self.ingress.max_replicas * self.max_in_flight

    @property
    def serve_max_ongoing(self) -> int:
        """Serve's own per-replica limit: the app's ``max_in_flight`` plus ``serve_headroom``."""
        return self.max_in_flight + self.serve_headroom


# ----- the Serve config file ---------------------------------------------------------------------


def splits_of(run_config: Path) -> SplitConfig:
    """The ``splits`` of a run config YAML: the one place split dates are written."""
    raw = read_yaml_mapping(run_config, "run config", SettingsError)
    if "splits" not in raw:
        raise SettingsError(f"{run_config}: a run config with a 'splits' section is needed (the models' split dates)")
    try:
        return SplitConfig.model_validate(raw["splits"])
    except ValidationError as err:
        raise SettingsError(f"{run_config}: splits: {_problems(err)}") from None


def _problems(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in err.errors())


def settings_from_args(args: dict, base: Path | None = None, **overrides) -> ServeSettings:
    """``ServeSettings`` from a Serve config application's ``args``: ``run_config`` (a path,
    relative to ``base`` or the working directory) stands for the run config's split dates.
    ``overrides`` (fields) replace what ``args`` says."""
    args = {**args, **{k: v for k, v in overrides.items() if v is not None}}
    run_config = args.pop("run_config", None)
    if run_config is not None and "splits" not in overrides:
        path = Path(run_config)
        args["splits"] = splits_of(path if path.is_absolute() or base is None else base / path)
    try:
        return ServeSettings.model_validate(args)
    except ValidationError as err:
        raise SettingsError(f"serve settings: {_problems(err)}") from None


class ServeConfig(BaseModel):
    """What ``rayfolio serve`` takes from a Serve config YAML: the rayfolio application's
    settings (its house limits from the deployment that runs the risk filters) and the proxy's
    host and port."""

    settings: dict  # the application's args, house limits included (not yet validated: flags may override)
    host: str = "127.0.0.1"
    port: int = 8000


def read_serve_config(path: Path, app_name: str = "rayfolio") -> ServeConfig:
    raw = read_yaml_mapping(path, "serve config", SettingsError)
    apps = [a for a in raw.get("applications", []) if isinstance(a, dict) and a.get("name") == app_name]
    if len(apps) != 1:
        raise SettingsError(f"{path}: needs one application named {app_name!r} under 'applications'")
    (app,) = apps
    args = dict(app.get("args") or {})
    # House limits live in the risk-filter deployment's user_config (live-reconfigurable with
    # `serve deploy`); the settings carry them to `rayfolio serve` the same way.
    limits = [d["user_config"] for d in app.get("deployments", []) if isinstance(d, dict) and "user_config" in d]
    if limits:
        limits = dict(limits[0])
        if "experiment" in limits:
            args["experiment"] = limits.pop("experiment")
        args["house_limits"] = limits
    http = raw.get("http_options") or {}
    return ServeConfig(settings=args, host=http.get("host", "127.0.0.1"), port=http.get("port", 8000))


SECRET_ENV = ("RAYFOLIO_API_KEYS", "RAYFOLIO_API_KEYS_FILE", "RAYFOLIO_AUDIT_KEY")


def secrets_from(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The keys' variables the ingress reads (forwarded in its runtime_env: replicas do not inherit
    the environment of the process that deploys them on a running cluster)."""
    environ = dict(os.environ) if environ is None else environ
    return {k: environ[k] for k in SECRET_ENV if k in environ}

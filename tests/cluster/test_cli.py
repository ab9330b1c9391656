"""The rayfolio command line, run as a user runs it."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.scale import cut_training_budgets
from rayfolio.cluster.cli import main
from rayfolio.cluster.config import ConfigError, RunConfig, load_config
from rayfolio.data.store import FeatureStore
from rayfolio.training.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_yaml_is_the_builtin_default():
    assert load_config(REPO / "configs" / "quickstart.yaml") == RunConfig()
    load_config(REPO / "configs" / "full.yaml")  # parses and validates


def test_the_console_entry_point_prints_help():
    done = subprocess.run([sys.executable, "-m", "rayfolio.cluster.cli", "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage: rayfolio" in done.stdout and "submit" in done.stdout


@pytest.mark.parametrize(
    "command",
    [["run"], ["data"], ["data", "prepare"], ["data", "show"], ["models", "list"], ["models", "promote"],
     ["models", "rollback"], ["rl"], ["backtest"], ["serve"], ["submit"]],
)  # fmt: skip
def test_every_command_prints_help(command, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse exits 0 after printing help
        main([*command, "--help"])
    assert exited.value.code == 0
    assert f"usage: rayfolio {' '.join(command)}" in capsys.readouterr().out


HELP_PROBE = """
import argparse, contextlib, io, json, sys
from rayfolio.cluster.cli import build_parser, main

def paths(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from paths(child, (*prefix, name))

commands = [[]] + [list(p) for p in paths(build_parser())]
for command in commands:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*command, "--help"])
heavy = [m for m in ("torch", "ray.data", "ray.train", "ray.tune", "ray.serve") if m in sys.modules]
print(json.dumps({"commands": commands, "heavy": heavy}))
"""


def test_help_loads_no_heavy_module():
    """`--help` of every command answers without importing torch or Ray's libraries (a fresh
    interpreter: this test session has imported them already)."""
    done = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert {"run", "rl", "backtest", "serve", "models", "submit"} <= {c[0] for c in probe["commands"] if c}
    assert ["data", "prepare"] in probe["commands"] and ["models", "promote"] in probe["commands"]
    assert probe["heavy"] == []


@pytest.mark.parametrize("argv", [["--verbose", "data", "show"], ["data", "show", "-v"], ["-q", "models", "list"]])
def test_verbosity_flags_before_or_after_the_command(argv):
    from rayfolio.cluster.cli import VERBOSE, build_parser

    args = build_parser().parse_args(argv)
    assert args.verbosity == (VERBOSE if "-q" not in argv else logging.WARNING)


def test_data_prepare_synthetic(tmp_path, ray_session, capsys):
    out = tmp_path / "store"
    code = main(["data", "prepare", "--source", "synthetic", "--assets", "5", "--days", "300", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rows:     1,500" in printed and "symbols:  5" in printed
    assert FeatureStore(out).summary().symbols == 5
    assert main(["data", "show", str(out)]) == 0
    assert "coverage" not in capsys.readouterr().err


def test_data_prepare_refuses_bad_input_with_a_clear_error(tmp_path, ray_session, capsys):
    bad = tmp_path / "prices.csv"
    bad.write_text("date,symbol,close\n2020-01-02,AAA,10\n2020-01-03,AAA,-1\n")
    code = main(["data", "prepare", "--source", str(bad), "--out", str(tmp_path / "store")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"rayfolio: error: {bad}, line 3 (2020-01-03, AAA), column 'close': price must be > 0 (got -1.0)")
    assert not (tmp_path / "store").exists()


def test_bad_config_names_file_and_field(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  horizons: [5, -1]\nsplits:\n  train_end: 2014-12-31\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert str(config) in message and "data.horizons" in message and "splits.validation_start" in message
    assert main(["run", "--config", str(config)]) == 2
    assert "rayfolio: error:" in capsys.readouterr().err


def tiny_run_config(tmp_path: Path, refit_every: int | None = None) -> Path:
    """A tiny run; ``refit_every`` (months) walks the forecasters forward (None: one refit)."""
    config = {
        "name": "tiny",
        "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "synthetic", "horizons": [5, 20], "synthetic": {"n_assets": 6, "n_days": 900, "seed": 1}},
        "splits": {"train_end": "2002-06-30", "validation_start": "2002-07-01", "validation_end": "2002-12-31",
                   "test_start": "2003-01-01"},
        "registry": str(tmp_path / "registry"),
        "forecasters": {
            "families": ["lstm", "gat"],
            "train": {"hidden": 8, "window": 10, "epochs": 1, "train_stride": 4},
            "search": {"num_samples": 1, "hidden": [8], "layers": [1], "window": [10]},
        },
        "allocation": {
            "env": {"window": 10, "rebalance_every": 10, "episode_steps": 6},
            "agents": {
                "ppo": {"timesteps": 64, "evaluations": 1, "num_samples": 1, "seeds": [0], "n_envs": 2,
                        "n_steps": [32], "batch_size": 32, "n_epochs": 1, "net_arch": [8], "asset_embedding": 2},
                "sac": {"timesteps": 40, "evaluations": 1, "num_samples": 1, "seeds": [0], "n_envs": 2,
                        "batch_size": 16, "buffer_size": 200, "learning_starts": 10, "net_arch": [8],
                        "asset_embedding": 2},
                "cpus_per_trial": 0.5,
            },
            "backtest": {"lookback": 60, "top_k": 2, "bootstrap_samples": 200},
        },
    }  # fmt: skip
    # One refit at a time: refits in parallel start many Ray workers at once, and Ray prints its
    # raylet's warning about that on the driver's stdout (the parallel path: tests/training/test_walk_forward.py).
    config["walk_forward"] = {"refit_every": refit_every, "parallel": 1}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_writes_store_report_and_plots(tmp_path, ray_session, capsys):
    # Two walk-forward refits: January 2003 on, and April 2003 on (the panel ends in June 2003).
    assert main(["run", "--config", str(tiny_run_config(tmp_path, refit_every=3))]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    printed = capsys.readouterr()
    # Progress (stage lines, timings) on stderr; the result, the report's path, on stdout.
    assert "[1/4] data" in printed.err and "[2/4] forecasters" in printed.err and "[3/4] allocation" in printed.err
    assert "[4/4] day two" in printed.err
    assert "timings: data " in printed.err and "total " in printed.err
    assert printed.out.strip() == f"report: {run_dir / 'report.md'}"
    report = (run_dir / "report.md").read_text()
    assert "| train " in report and "| rsi_14 " in report and "Largest one-day moves" in report
    for plot in ("prices.png", "volatility_regimes.png"):
        assert (run_dir / "plots" / plot).stat().st_size > 10_000
        assert f"plots/{plot}" in report
    assert FeatureStore(run_dir / "features").summary().rows == 6 * 900
    assert "## Forecasters" in report and "| momentum_12_1 " in report and "deflated Sharpe" in report
    forecasts = pd.read_parquet(run_dir / "forecasts.parquet")
    assert set(forecasts["model"]) == {"lstm", "gat", "momentum_12_1", "reversal_5d", "ridge"}
    assert set(forecasts["split"]) == {"validation", "test"} and set(forecasts["horizon"]) == {5, 20}
    test_dates = forecasts[forecasts.split == "test"]["date"]
    assert test_dates.min() >= pd.Timestamp("2003-01-01") and test_dates.max() > pd.Timestamp("2003-04-01")
    assert "Walk-forward: 2 expanding-window refit(s)" in report and "t (NW)" in report and "p (> ridge)" in report
    # Each refit registered its models; the last one's are production, the first's kept for the record.
    models = ModelRegistry(tmp_path / "registry")
    assert models.stage_version("gat-forecaster") == "v0002"
    assert models.versions("gat-forecaster") == ["v0001", "v0002"]
    assert models.get("gat-forecaster", "v0002").metrics["walk_forward_history"] == [{"refit": 0, "version": "v0001"}]
    # The models commands on that registry.
    capsys.readouterr()
    registry = ["--registry", str(tmp_path / "registry")]
    assert main(["models", "list", *registry]) == 0
    listed = capsys.readouterr().out
    assert "transformer: Transformer encoder" in listed
    assert re.search(r"\| gat-forecaster\s+\| v0002\s+\| production\s+\|", listed), listed
    assert main(["models", "rollback", "gat-forecaster", *registry]) == 2
    assert "no earlier production version" in capsys.readouterr().err
    assert main(["models", "promote", "gat-forecaster", "v0002", "--stage", "staging", *registry]) == 0
    # The allocation stage: agents registered, backtest files, the comparison in the report.
    assert "## Allocation agents" in report and "## Backtest (test period, after costs)" in report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    served = {"served_cautious", "served_balanced", "served_aggressive"}
    assert set(metrics) == {"ppo", "sac", "tilt", "equal_weight", "min_variance", "max_sharpe", "hrp",
                            "forecast_top_k"} | served  # fmt: skip
    # The report opens with what a client following the recommendations would have earned.
    assert report.split("\n## ")[1].startswith("What a client following rayfolio's recommendations")
    assert "## Forecast tilt around 1/N" in report and "## Confidence reliability (test period)" in report
    assert set(pd.read_parquet(run_dir / "returns.parquet").columns) == set(metrics)
    # Every strategy's Sharpe against 1/N carries its Ledoit-Wolf p-value.
    assert all(0 <= metrics[name]["p_vs_equal_weight"] <= 1 for name in metrics if name != "equal_weight")
    assert "p (Sharpe > 1/N's)" in report
    assert (run_dir / "plots" / "equity_curves.png").stat().st_size > 10_000
    assert re.search(r"\| ppo-allocator\s+\| v0001\s+\| production\s+\|", listed), listed
    # Day two: the last 60 days held back, appended by the daily cycle, equal to the full store.
    assert "## Day two" in report and "The appended store equals the full build" in report
    assert "| forecasts refresh | ok " in report and "### Drift of the latest window" in report
    assert FeatureStore(run_dir / "day-two" / "store").version == 2
    # `rayfolio backtest` on the run's store, registry and forecasts.
    capsys.readouterr()
    assert main(["backtest", "--config", str(tiny_run_config(tmp_path, refit_every=3))]) == 0
    backtest_report = (run_dir / "backtest" / "report.md").read_text()
    assert "ppo-allocator v0001 (production)" in backtest_report and "| forecast_top_k " in backtest_report
    again = json.loads((run_dir / "backtest" / "metrics.json").read_text())
    assert again["ppo"]["sharpe"] == pytest.approx(metrics["ppo"]["sharpe"])  # the registered agent is the same
    for name in (*served, "tilt"):  # the production versions are the ones the run measured
        assert again[name]["sharpe"] == pytest.approx(metrics[name]["sharpe"]), name
    # `rayfolio rl` with the forecasts as observations: agents learn inside validation, register as staging.
    config = yaml.safe_load(tiny_run_config(tmp_path).read_text())
    config["allocation"]["env"]["forecast_features"] = True
    (tmp_path / "forecasts.yaml").write_text(yaml.safe_dump(config))
    assert main(["rl", "--config", str(tmp_path / "forecasts.yaml")]) == 0
    rl_report = (run_dir / "rl" / "report.md").read_text()
    assert "ensemble forecast per horizon" in rl_report and "| ppo " in rl_report
    stored = ModelRegistry(tmp_path / "registry").get("ppo-allocator", "v0002")
    assert stored.card.feature_names[-2:] == ("forecast_5d", "forecast_20d")
    assert ModelRegistry(tmp_path / "registry").stage_version("ppo-allocator", "staging") == "v0002"
    capsys.readouterr()
    assert main(["data", "show", "--config", str(tiny_run_config(tmp_path))]) == 0
    assert f"feature store: {run_dir / 'features'}" in capsys.readouterr().out


def quickstart_with_small_budgets(tmp_path: Path) -> Path:
    """configs/quickstart.yaml as shipped (embedded data, splits, walk-forward refits, every family and
    agent, the backtest) with only the training budgets cut: the full budgets take ~9 of the suite's
    minutes and `make run` runs them (its time is in the README and the notes, never a timed test)."""
    config = cut_training_budgets(yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text()))
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_main_job_on_the_embedded_default(tmp_path, ray_session, monkeypatch):
    """`make run`'s job: the quickstart on the embedded S&P 500 sample, every stage, small training budgets."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAYFOLIO_REGISTRY", raising=False)
    assert main(["run", "--config", str(quickstart_with_small_budgets(tmp_path))]) == 0
    report = (tmp_path / "runs" / "quickstart" / "report.md").read_text()
    assert "166,260 rows, 20 symbols, 1990-01-02 .. 2022-12-28" in report
    assert "## Forecasters" in report
    registry = ModelRegistry(tmp_path / "runs" / "registry")
    assert {"lstm-forecaster", "transformer-forecaster", "gat-forecaster", "ppo-allocator", "sac-allocator"} <= set(
        registry.models()
    )
    assert "## Backtest (test period, after costs)" in report and "| index_buy_hold " in report
    metrics = json.loads((tmp_path / "runs" / "quickstart" / "metrics.json").read_text())
    assert {
        "ppo",
        "sac",
        "equal_weight",
        "min_variance",
        "max_sharpe",
        "hrp",
        "forecast_top_k",
        "index_buy_hold",
        "tilt",
        "served_cautious",
        "served_balanced",
        "served_aggressive",
    } == set(metrics)
    assert report.split("\n## ")[1].startswith("What a client following rayfolio's recommendations")
    assert metrics["equal_weight"]["days"] == 1507


def test_serve_refuses_to_start_without_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAYFOLIO_API_KEYS", raising=False)
    monkeypatch.delenv("RAYFOLIO_API_KEYS_FILE", raising=False)
    assert main(["serve", "--registry", str(tmp_path)]) == 2
    assert "no API keys: set RAYFOLIO_API_KEYS" in capsys.readouterr().err
    monkeypatch.setenv("RAYFOLIO_API_KEYS", "short")
    assert main(["serve", "--registry", str(tmp_path)]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    monkeypatch.setenv("RAYFOLIO_API_KEYS", "a-long-enough-key-123")
    assert main(["serve", "--registry", str(tmp_path)]) == 2
    assert "no production allocator" in capsys.readouterr().err

"""Errors a user sees: every known one is a single line on stderr with exit code 2,
never a traceback, also when Ray raised it inside a task."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayfolio.cluster.cli import main, user_error
from rayfolio.data.schema import Location, PanelValidationError


def _forty_rows_with_one_bad_price(path: Path) -> Path:
    rows = [f"2020-02-{d:02d},AAA,{10 + d}" for d in range(1, 29)] + [f"2020-03-{d:02d},AAA,{40 + d}" for d in (2, 3)]
    rows += [f"2020-03-{d:02d},BBB,{20 + d}" for d in range(4, 14)]
    rows[29] = "2020-03-03,AAA,-1.5"  # line 31 (the header is line 1)
    path.write_text("date,symbol,close\n" + "\n".join(rows) + "\n")
    return path


def test_a_refused_file_is_one_line_without_starting_ray(tmp_path):
    """The whole terminal output of `rayfolio data prepare` on a bad 40-row file: one line that
    names file, line, (date, symbol), column and rule; exit 2; nothing written; and no Ray
    started (its temp dir stays empty): the file is checked in process first."""
    bad = _forty_rows_with_one_bad_price(tmp_path / "prices.csv")
    out = tmp_path / "store"
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    done = subprocess.run(
        [sys.executable, "-m", "rayfolio.cluster.cli", "data", "prepare", "--source", str(bad), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    terminal = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, terminal
    assert len(terminal) <= 3 and "Traceback" not in done.stdout + done.stderr, terminal
    assert terminal[-1] == (
        f"rayfolio: error: {bad}, line 31 (2020-03-03, AAA), column 'close': price must be > 0 (got -1.5)"
    )
    assert not out.exists()
    assert list(ray_tmp.iterdir()) == [], "Ray started to refuse a small local file"


def _config(tmp_path: Path, sections: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"allocation": {"agents": {"algorithms": ["dqn"]}}},
         "allocation.agents.algorithms.0: Input should be 'ppo' or 'sac' (got 'dqn')"),
        ({"allocation": {"env": {"features": ["ret_1", "ret_2"]}}},
         "allocation.env.features: unknown feature 'ret_2'; allowed: ret_1, ret_5, "),
        ({"allocation": {"env": {"risk_penalty": "cvar"}}},
         "allocation.env.risk_penalty: Input should be 'none', 'variance' or 'drawdown' (got 'cvar')"),
        ({"forecasters": {"families": []}, "allocation": {"env": {"forecast_features": True}}},
         "allocation.env.forecast_features needs forecasts: list forecasters.families, or turn it off"),
        ({"data": {"horizons": [5, 0]}}, "data.horizons: horizons must be distinct positive trading-day counts"),
        ({"allocation": {"env": {"window": "twenty"}}}, "allocation.env.window: Input should be a valid integer"),
        ({"allocation": {"backtest": {"index": "spx.xlsx"}}},
         "allocation.backtest.index: 'auto', 'sp500', null, or a .csv/.parquet file"),
    ],
)  # fmt: skip
def test_a_bad_config_value_is_one_line_naming_the_key_and_what_is_allowed(sections, expected, tmp_path, capsys):
    config = _config(tmp_path, sections)
    assert main(["run", "--config", str(config)]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    lines = printed.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rayfolio: error: {config}: ") and expected in lines[0], lines


def test_a_feature_the_source_cannot_give_is_refused_before_anything_runs(tmp_path, capsys):
    """The embedded sample has closes only: atr_14 needs high and low. Refused before Ray starts
    (no ray_session here, and the run directory is not even created)."""
    config = _config(tmp_path, {"runs_dir": str(tmp_path / "runs"), "allocation": {"env": {"features": ["atr_14"]}}})
    assert main(["run", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rayfolio: error: allocation.env.features: 'atr_14' not available from 'sp500'"), error
    assert not (tmp_path / "runs").exists()
    config = _config(tmp_path, {"runs_dir": str(tmp_path / "runs"), "allocation": {"backtest": {"index": "no.csv"}}})
    assert main(["run", "--config", str(config)]) == 2
    assert capsys.readouterr().err == "rayfolio: error: allocation.backtest.index: no such file no.csv\n"
    assert not (tmp_path / "runs").exists()


def test_bad_command_line_values_are_named_like_config_keys(tmp_path, capsys):
    assert main(["data", "prepare", "--source", "synthetic", "--assets", "0", "--out", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "rayfolio: error: command-line options: data.synthetic.n_assets: "
        "Input should be greater than or equal to 1 (got 0)"
    )


def test_a_missing_store_and_an_unknown_model_are_one_line(tmp_path, capsys):
    store = tmp_path / "nowhere"
    assert main(["data", "show", str(store)]) == 2
    assert capsys.readouterr().err == f"rayfolio: error: {store}: not a feature store (no manifest.json)\n"
    assert main(["models", "promote", "nosuch-forecaster", "v0001", "--registry", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rayfolio: error: ") and "nosuch-forecaster" in err and len(err.splitlines()) == 1


def test_an_error_raised_inside_a_ray_task_is_the_original_one(ray_session):
    """Ray re-raises a task's error as RayTaskError(<class>), whose text is the worker's whole
    traceback; the CLI reports the original error's one line."""
    error = PanelValidationError(Location("p.csv", line=3), "price must be > 0", column="close", value=-1.0)

    @ray_session.remote
    def refuse():
        raise error

    with pytest.raises(PanelValidationError) as caught:
        ray_session.get(refuse.remote())
    assert len(str(caught.value).splitlines()) > 1  # the worker's traceback: what a plain `except` would print
    found = user_error(caught.value, (PanelValidationError,))
    assert str(found) == "p.csv, line 3, column 'close': price must be > 0 (got -1.0)"
    assert user_error(ValueError("a bug"), (PanelValidationError,)) is None


def test_an_unexpected_error_is_not_hidden(tmp_path, monkeypatch):
    """A bug keeps its traceback: only the errors a user can cause become one line."""
    import rayfolio.cluster.commands.data as data_command

    def broken(_args):
        raise KeyError("a bug")

    monkeypatch.setattr(data_command, "_show", broken)
    with pytest.raises(KeyError):
        main(["data", "show", str(tmp_path)])


def test_every_expected_error_class_exists():
    """The CLI names the errors a user can cause by module and class: a move must update the list."""
    import importlib

    from rayfolio.cluster.cli import EXPECTED_ERRORS

    for module, name in EXPECTED_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception), (module, name)


def test_splits_outside_the_data_are_one_line_naming_the_keys(tmp_path, ray_session, capsys):
    """The quickstart's split dates on a panel of 2000-2001: no validation or test dates."""
    config = _config(
        tmp_path,
        {"runs_dir": str(tmp_path / "runs"),
         "data": {"source": "synthetic", "synthetic": {"n_assets": 2, "n_days": 300}, "horizons": [5]}},
    )  # fmt: skip
    assert main(["run", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("rayfolio: error: split 'validation' holds no dates") and lines[-1].endswith(
        "check splits.validation_start and validation_end"
    ), lines
    assert not any("Traceback" in line for line in lines)

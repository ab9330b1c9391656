"""`rayfolio serve` takes its settings from the same Serve config YAML as `serve deploy`:
the shipped cluster/serve_config.yaml by default, another with --serve-config; the run's
locations and split dates from --config; flags over both. Refusals are one line, before Ray."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import yaml

from rayfolio.cluster.cli import build_parser, main
from rayfolio.cluster.commands.serve import default_serve_config, serve_settings
from rayfolio.cluster.config import RunConfig

SHIPPED = yaml.safe_load(default_serve_config().read_text())
SHIPPED_ARGS = SHIPPED["applications"][0]["args"]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_the_shipped_serve_config_sets_limits_and_the_run_config_the_locations(tmp_path):
    settings, host, port = serve_settings(_args("--registry", str(tmp_path / "registry"), "--allocator", "x-allocator"))
    run = RunConfig()
    assert settings.splits == run.splits  # split dates come from the run config, not repeated in YAML
    assert settings.store == run.store_dir() and settings.registry == (tmp_path / "registry").resolve()
    assert settings.max_in_flight == SHIPPED_ARGS["max_in_flight"]
    assert settings.rate_per_key == SHIPPED_ARGS["rate_per_key"]
    assert (
        settings.house_limits.max_position
        == SHIPPED["applications"][0]["deployments"][0]["user_config"]["max_position"]
    )
    assert (host, port) == ("127.0.0.1", 8000)


def test_another_serve_config_with_its_own_run_config_and_flags_over_both(tmp_path):
    run_config = tmp_path / "run.yaml"
    splits = {"train_end": "2001-12-31", "validation_start": "2002-01-01", "validation_end": "2002-06-30",
              "test_start": "2002-07-01"}  # fmt: skip
    run_config.write_text(yaml.safe_dump({"splits": splits}))
    mine = yaml.safe_load(default_serve_config().read_text())
    app = mine["applications"][0]
    app["args"] |= {"run_config": str(run_config), "store": str(tmp_path / "store"), "max_in_flight": 5,
                    "rate_per_key": 7.0, "registry": str(tmp_path / "reg")}  # fmt: skip
    mine["http_options"]["port"] = 9100
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(mine))

    settings, host, port = serve_settings(_args("--serve-config", str(path), "--allocator", "ppo-allocator"))
    assert host == "127.0.0.1"
    assert settings.splits.train_end == dt.date(2001, 12, 31) and settings.splits.test_start == dt.date(2002, 7, 1)
    assert settings.max_in_flight == 5 and settings.rate_per_key == 7.0 and port == 9100
    assert Path(settings.store) == tmp_path / "store" and settings.allocator == "ppo-allocator"

    _, _, port = serve_settings(_args("--serve-config", str(path), "--allocator", "a", "--port", "9200"))
    assert port == 9200


def test_a_bad_serve_config_value_is_one_line_before_ray_starts(tmp_path, capsys):
    mine = yaml.safe_load(default_serve_config().read_text())
    mine["applications"][0]["args"]["max_in_flight"] = 0
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(mine))
    code = main(["serve", "--insecure-dev", "--serve-config", str(path), "--allocator", "a"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("rayfolio: error: ") and "max_in_flight" in err[0]

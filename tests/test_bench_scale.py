"""bench/scale.py's own logic (splits, the config it writes, the log parsing, the table): no run, no Ray."""

from __future__ import annotations

import pandas as pd

from bench.scale import ISSUE_SPLITS, SizeResult, run_config, split_dates, table, targets
from bench.scale_log import components, stage_times


def test_splits_are_the_issues_at_2520_days_and_proportional_otherwise():
    assert split_dates(2520) == ISSUE_SPLITS
    small = {k: pd.Timestamp(v) for k, v in split_dates(400).items()}
    assert small["train_end"] < small["validation_start"] <= small["validation_end"] < small["test_start"]
    days = pd.bdate_range(small["validation_start"], small["validation_end"])
    assert len(days) >= 100  # longer than the 60-day purge


def test_the_run_config_is_the_quickstart_on_synthetic_data(tmp_path):
    config = run_config(7, 400, tmp_path, smoke=True)
    assert config["data"]["source"] == "synthetic" and config["data"]["synthetic"] == {"n_assets": 7, "n_days": 400}
    assert config["registry"] == str(tmp_path / "registry") and config["runs_dir"] == str(tmp_path / "runs")
    assert config["allocation"]["agents"]["sac"]["timesteps"] == 200
    assert run_config(7, 2520, tmp_path, smoke=False)["allocation"]["agents"]["sac"]["timesteps"] == 6000


def test_components_from_the_timestamped_log(tmp_path):
    lines = [
        (10.0, "[1/4] data: feature store from 'synthetic' on Ray Data"),
        (15.0, "[2/4] forecasters: lstm on Ray Tune + Ray Train, baselines"),
        (16.0, "refit 0 (2008-01-01 on): searching lstm, 2 configurations"),
        (40.0, "explanations: 15 dates (2009-08-10 .. 2009-08-28) in 2 Ray tasks"),
        (50.0, "explanations: 15 of 15 dates ... -> /x (models ...)"),
        (51.0, "[3/4] allocation: PPO agents on Ray Tune"),
        (52.0, "searching ppo: 2 draws x 2 seeds, 20,000 steps each, on Ray Tune"),
        (70.0, "ppo: best validation Sharpe 0.5, deflated Sharpe 0.1"),
        (71.0, "tilt: k 0.25, band 0.010 chosen on validation (Sharpe 0.70)"),
        (72.0, "[4/4] day two: the last 60 days held back, then rayfolio daily"),
        (73.0, "daily: explain"),
        (74.0, "explanations: 12 dates (2009-08-10 .. 2009-08-25) in 2 Ray tasks"),  # day two's, not the refresh
        (77.0, "explanations: 12 of 12 dates ... -> /x (models ...)"),
        (78.0, "daily: drift"),
        (80.0, "timings: data 5.0s, forecasters 36.0s, allocation 29.0s, total 70.0s"),
    ]
    out = components(lines, 0.0, 90.0, tmp_path)  # no Tune experiment there: the search lasts to the next line
    assert out["startup"] == 10.0 and out["forecasters: lstm search"] == 24.0
    assert out["forecasters: explanation refresh (SHAP of the latest dates)"] == 10.0 and out["other"] == 1.0
    assert out["allocation: ppo trials (Tune) + every trial's test walk"] == 18.0
    assert out["day two: daily explain"] == 5.0 and out["day two: daily drift"] == 2.0
    assert out["report and plots"] == 10.0
    assert stage_times(lines, tmp_path) == {"data": 5.0, "forecasters": 36.0, "allocation": 29.0, "total": 70.0}


def test_the_table_gives_ratios_and_the_targets():
    small = SizeResult(100, 100.0, {"data": 10.0, "total": 100.0}, {"startup": 5.0}, exit_code=0)
    big = SizeResult(400, 500.0, {"data": 50.0, "total": 500.0}, {"startup": 5.0}, exit_code=0)
    frame, reference = table([small, big], 3600)
    assert reference == 100 and frame.at["stage: data", "400/100"] == "5.00x"
    lines = targets([small, big], 3600)
    assert lines[0].startswith("400 assets <= 15 min: met") and "data: 400/100 = 5.00x <= 4.5x: MISSED" in lines
    stopped = SizeResult(400, 3600.0, {"data": 50.0}, {"startup": 5.0, "data: x": 20.0}, stopped_in="stage data, x",
                         stopped_stage="data", stopped_component="data: x")  # fmt: skip
    frame, _ = table([small, stopped], 3600)
    assert frame.at["stage: total", "400 (s)"] == "> 3600" and frame.at["data: x", "400 (s)"] == "> 20"
    assert frame.at["stage: data", "400 (s)"] == "> 50" and frame.at["stage: data", "400/100"] == ""
    assert "data: 400/100 <= 4.5x: MISSED (400 was stopped before it ended)" in targets([small, stopped], 3600)


def test_a_kept_run_is_read_back_from_its_log_and_run_dir(tmp_path):
    import json
    import os

    import yaml

    from bench.scale import from_kept

    root = tmp_path / "assets-7"
    (root / "runs" / "scale-7").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(run_config(7, 400, root, smoke=True)))
    os.utime(root / "config.yaml", (1000.0, 1000.0))  # the run's start
    log = ["[1/4] data: feature store", "[2/4] forecasters: lstm", "refit 0 (2008-01-01 on): searching lstm, 2",
           "[3/4] allocation: PPO", "timings: data 4.0s, total 30.0s", "report: /x/report.md"]  # fmt: skip
    at = [2.0, 6.0, 7.0, 20.0, 31.5, 33.0]
    (root / "run.log").write_text("".join(f"{t:9.2f}  {line}\n" for t, line in zip(at, log, strict=True)))
    (root / "runs" / "scale-7" / "summary.json").write_text(json.dumps({"timings_s": {"data": 4.0, "total": 30.0}}))
    result = from_kept(root)
    assert (result.n_assets, result.seconds, result.exit_code) == (7, 33.0, 0)
    assert result.stages == {"data": 4.0, "total": 30.0}
    assert result.components["startup"] == 2.0 and result.components["forecasters: lstm search"] == 13.0
    (root / "run.log").write_text("".join(f"{t:9.2f}  {line}\n" for t, line in zip(at[:4], log[:4], strict=True)))
    assert from_kept(root).exit_code is None  # no report line: it was stopped

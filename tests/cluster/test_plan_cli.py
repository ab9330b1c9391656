"""``rayfolio plan``: the plan the core computes, read as text or JSON; bad input is one line on stderr
and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rayfolio.cluster.cli import main
from rayfolio.rl.planning import PlanSpec, load_histories, plan


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(1)
    dates = pd.bdate_range("2018-01-01", periods=300, name="date")
    frame = pd.DataFrame({"served_balanced": rng.normal(5e-4, 0.008, 300), "hrp": rng.normal(3e-4, 0.006, 300)},
                         index=dates)  # fmt: skip
    frame.to_parquet(out / "returns.parquet")
    return out


ARGS = ["plan", "--goal", "80000", "--horizon-years", "12", "--initial", "20000", "--monthly", "150", "--paths", "800"]


def test_the_plan_as_json_is_the_cores_and_as_text_reads(run_dir, capsys):
    assert main([*ARGS, "--run-dir", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    spec = PlanSpec(goal=80_000, horizon_years=12, initial_wealth=20_000, monthly_contribution=150, paths=800)
    assert out == plan(load_histories(run_dir / "returns.parquet")["balanced"], spec).model_dump(mode="json")
    assert main([*ARGS, "--run-dir", str(run_dir), "--strategy", "hrp"]) == 0
    text = capsys.readouterr().out
    assert "probability of reaching it" in text and "95% interval" in text and "median" in text
    assert "with hrp:" in text and "800 paths x 144 months" in text and "A few years of history" in text


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(["--goal", "0"], "--goal: Input should be greater than 0"),
     (["--horizon-years", "41"], "--horizon-years: Input should be less than or equal to 40"),
     (["--monthly", "-5"], "--monthly: Input should be greater than or equal to 0"),
     (["--target-probability", "1"], "--target-probability: Input should be less than 1"),
     (["--strategy", "yolo"], "--strategy: 'yolo' is not in"),
     (["--run-dir", "/nonexistent/run"], "no backtest returns to plan with")],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(run_dir, capsys, extra, fragment):
    argv = [*ARGS, "--run-dir", str(run_dir), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rayfolio: error: ") and fragment in err and "\n" not in err, err
    if "yolo" in extra:
        assert "balanced, hrp" in err  # the choices are listed

"""``rayfolio monitor performance`` as a user runs it: an audit log of served recommendations whose
forecasts are known exactly (the realised returns themselves, or their negation), a store with the
labels, and the levels, the file and the errors that come out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rayfolio.cluster.cli import main
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.schemas import PortfolioRisk, RecommendationRequest, RecommendationResponse

HORIZON = 20


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("performance") / "runs" / "live" / "features"
    prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=160, seed=4)), path, (5, HORIZON))
    return path


def write_audit(store: Path, path: Path, sign: float, days: int = 60) -> pd.DataFrame:
    """Two recommendations a day on the store's last ``days`` dates, forecasting ``sign`` x the
    20-day label (its last 20 dates: not realised, a forecast of 0), all in the first asset."""
    frame = FeatureStore(store).to_pandas([f"label_fwd_{HORIZON}d"])
    labels = frame.pivot(index="date", columns="symbol", values=f"label_fwd_{HORIZON}d").iloc[-days:]
    log = AuditLog(sqlite_url(path))
    for date, row in labels.iterrows():
        for client, weight in (("a", 0.5), ("b", 0.9)):
            request = RecommendationRequest.model_validate({"risk_profile": {"horizon_days": HORIZON}})
            response = RecommendationResponse(
                request_id=f"{client}-{date.date()}", as_of=date.date(),
                target_weights={row.index[0]: weight, "CASH": 1 - weight}, trades={},
                expected_returns=(sign * row.fillna(0.0)).to_dict(), confidence={},
                portfolio_risk=PortfolioRisk(volatility=0.1, var_95=0.01, cvar_95=0.02), checks=[], model_versions={},
            )  # fmt: skip
            payload = {"request": request.model_dump(mode="json"), "response": response.model_dump(mode="json")}
            log.append(key=client, request_id=response.request_id, kind="recommendation", payload=payload)
    return labels


def run(args: list[str], out: Path, capsys) -> tuple[dict, str]:
    assert main(["monitor", "performance", *args, "--out", str(out)]) == 0
    return json.loads((out / "performance.json").read_text()), capsys.readouterr().out


def test_perfect_forecasts_are_info_and_their_negation_is_critical(store, tmp_path, capsys):
    labels = write_audit(store, tmp_path / "good.db", +1.0)
    write_audit(store, tmp_path / "bad.db", -1.0)
    good, printed = run(["--audit", str(tmp_path / "good.db"), "--store", str(store)], tmp_path / "good", capsys)
    assert good["level"] == "info" and good["reasons"] == []
    assert good["window"] == [labels.index[0].date().isoformat(), labels.index[-1].date().isoformat()]
    twenty = good["horizons"]["20"]
    assert twenty["rank_ic_mean"] == pytest.approx(1.0) and twenty["rank_ic_dates"] == 40
    assert twenty["pending_dates"] == 20 and twenty["portfolios"] == 80 and twenty["pending_portfolios"] == 40
    assert twenty["hit_rate"] == pytest.approx(1.0)
    assert "20d" in printed and "level: info" in printed
    bad, printed = run(["--audit", str(tmp_path / "bad.db"), "--store", str(store)], tmp_path / "bad", capsys)
    assert bad["level"] == "critical" and bad["horizons"]["20"]["rank_ic_mean"] == pytest.approx(-1.0)
    assert bad["reasons"] == ["20d: mean Rank IC -1.0000 over the last 40 scored dates is below the floor 0"]
    assert "level: critical" in printed
    # The same log: the portfolios' figures do not depend on the forecasts' sign.
    for key in ("served_return_mean", "equal_weight_return_mean", "excess_return_mean"):
        assert bad["horizons"]["20"][key] == pytest.approx(good["horizons"]["20"][key], abs=1e-15)


def test_a_short_window_is_insufficient_data_and_days_bound_the_recent_dates(store, tmp_path, capsys):
    labels = write_audit(store, tmp_path / "bad.db", -1.0)
    start, end = labels.index[0].date().isoformat(), labels.index[9].date().isoformat()
    few, _ = run(["--audit", str(tmp_path / "bad.db"), "--store", str(store), "--window", f"{start}:{end}"],
                 tmp_path / "few", capsys)  # fmt: skip
    assert few["level"] == "warning" and few["window"] == [start, end]
    assert "fewer than 20 dates are scored" in few["reasons"][0]
    recent, _ = run(["--audit", str(tmp_path / "bad.db"), "--store", str(store), "--days", "25", "--ic-floor",
                     "-1.0"], tmp_path / "recent", capsys)  # fmt: skip
    assert recent["level"] == "info" and recent["horizons"]["20"]["rank_ic_dates"] == 25
    assert recent["horizons"]["20"]["scored_dates"] == 40  # the full series is kept


def test_the_defaults_come_from_the_run_config(store, tmp_path, capsys):
    runs = store.parent.parent
    write_audit(store, runs / "live" / "audit.db", +1.0)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"name": "live", "runs_dir": str(runs)}))
    assert main(["monitor", "performance", "--config", str(config)]) == 0
    written = json.loads((runs / "monitor" / "performance.json").read_text())
    assert written["level"] == "info" and written["audit"] == sqlite_url(runs / "live" / "audit.db")
    assert written["store"] == str(store) and "written:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--audit", "{tmp}/nope.db"], "audit log sqlite:///{tmp}/nope.db: no such file"),
        (["--audit", "nosuchdb://host/x"], "audit log nosuchdb://host/x: cannot be read"),
        (["--window", "2020-02-30:2020-03-01"], "--window '2020-02-30:2020-03-01': expected START:END"),
        (["--window", "2020-03-01:2020-02-01"], "--window '2020-03-01:2020-02-01': the start 2020-03-01 is after"),
        (["--days", "0"], "--days must be at least 1, got 0"),
        (["--store", "{tmp}/nowhere"], "{tmp}/nowhere: not a feature store"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, tmp_path, capsys, args, message):
    write_audit(store, tmp_path / "audit.db", +1.0, days=5)
    given = [a.format(tmp=tmp_path) for a in args]
    defaults = {"--audit": str(tmp_path / "audit.db"), "--store": str(store)}
    flags = given + [x for flag, value in defaults.items() if flag not in given for x in (flag, value)]
    assert main(["monitor", "performance", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rayfolio: error: {message.format(tmp=tmp_path)}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "nope.db").exists()

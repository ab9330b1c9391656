"""``rayfolio monitor drift`` on a tiny store: drift.json (the contract ``monitor check`` reads), the report
and its plot, the forecasts of a registered ensemble and the served weights of an audit log, the gauges,
and one-line refusals of a bad window."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import torch
import yaml

from rayfolio.cluster.cli import main
from rayfolio.cluster.drift import NO_SERVED, export_gauges
from rayfolio.data.drift import DriftConfig, DriftResult, SeriesDrift, insufficient, population_stability_index
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig

# 700 business days from 2000-01-03 end in September 2002.
SPLITS = SplitConfig(train_end=dt.date(2001, 9, 30), validation_start=dt.date(2001, 10, 1),
                     validation_end=dt.date(2002, 2, 28), test_start=dt.date(2002, 3, 1))  # fmt: skip
WINDOW = "2002-06-03:2002-08-30"


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_session) -> FeatureStore:
    out = tmp_path_factory.mktemp("drift") / "store"
    prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=700, seed=5)), out, (5, 20))
    return FeatureStore(out)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "drift.yaml"
    path.write_text(yaml.safe_dump({"splits": SPLITS.model_dump(mode="json", exclude_none=True)}))
    return path


def test_drift_without_a_registry_writes_json_report_and_plot(store, config_file, tmp_path, capsys):
    out = tmp_path / "monitor"
    args = ["monitor", "drift", "--store", str(store.path), "--window", WINDOW, "--config", str(config_file)]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "drift.json").read_text())
    assert report["window"] == ["2002-06-03", "2002-08-30"]
    assert report["level"] in ("info", "warning", "critical") and isinstance(report["reasons"], list)
    assert dt.datetime.fromisoformat(report["created_at"]).tzinfo is not None
    assert report["reference"]["source"] == "train split of the run config"
    train = PurgedDateSplitter(SPLITS, purge=20).split_dates(store.to_pandas(["ret_1"])["date"])["train"]
    assert report["reference"]["window"] == [str(train[0]), str(train[-1])]
    assert [f["name"] for f in report["features"]] == list(store.feature_names)
    for feature in report["features"]:
        assert {"name", "psi", "ks", "n", "thresholds", "level"} <= set(feature)
        if feature["level"] != "insufficient data":
            assert np.isfinite(feature["psi"]) and 0 <= feature["ks"] <= 1 and feature["n"] >= 50
            assert feature["thresholds"]["critical"] >= feature["thresholds"]["warning"] >= 0.1
    worst = max(["info", "warning", "critical"].index(f["level"]) for f in report["features"] if f["psi"] is not None)
    assert report["level"] == ["info", "warning", "critical"][worst]
    assert len(report["reasons"]) == sum(f["level"] in ("warning", "critical") for f in report["features"])
    # No registry: no forecasts; no audit log: the served weights say so, at level info.
    assert [p["name"] for p in report["predictions"]] == ["target_weights"]
    weights = report["predictions"][0]
    assert weights["psi"] is None and weights["level"] == "info" and weights["note"] == NO_SERVED
    assert (out / "plots" / "drift_psi.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "drift.md").read_text()
    assert "](plots/drift_psi.png)" in markdown and "| ret_1 " in markdown
    assert "| series " in printed and f"drift 2002-06-03 .. 2002-08-30: {report['level']}" in printed


def test_drift_with_a_registry_and_an_audit_log_measures_forecasts_and_served_weights(store, tmp_path, capsys):
    from rayfolio.serving.audit import AuditLog, sqlite_url
    from rayfolio.training.cards import Calendar, ForecasterCard, NormalizerParams
    from rayfolio.training.config import TrainConfig
    from rayfolio.training.models import build_model
    from rayfolio.training.panel import Normalizer, Panel
    from rayfolio.training.registry import WEIGHTS, ModelRegistry

    panel = Panel.from_store(store)
    splitter = PurgedDateSplitter(SPLITS, purge=20)
    torch.manual_seed(0)
    train = TrainConfig(family="lstm", hidden=8, window=10, layers=1)
    model = build_model("lstm", train.model_kwargs(len(panel.feature_names), 2))
    card = ForecasterCard(train=train, feature_names=panel.feature_names, horizons=(5, 20),
                          normalizer=NormalizerParams.of(Normalizer.fit(panel.features[:400])),
                          symbols=tuple(panel.symbols.tolist()), calendar=Calendar.of(store, splitter))  # fmt: skip
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(card, {WEIGHTS: model.state_dict()}, metrics={})  # the first version is production

    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), secret=b"test")
    rng = np.random.default_rng(0)
    symbols, served = [*panel.symbols.tolist(), "CASH"], []
    in_window = (panel.dates >= np.datetime64("2002-06-03")) & (panel.dates <= np.datetime64("2002-08-30"))
    first = int(np.flatnonzero(in_window)[0])
    before = panel.dates[first - 60 : first - 48]
    for i, as_of in enumerate([*before, *panel.dates[first : first + 12]]):
        cash = 0.1 if i < 12 else 0.5  # the served portfolios hold more cash in the window
        weights = np.append(rng.dirichlet(np.ones(6)) * (1 - cash), cash)
        served.append(weights)
        response = {"as_of": str(as_of), "target_weights": dict(zip(symbols, weights.tolist(), strict=True))}
        audit.append(key="k", request_id=f"r{i}", kind="recommendation", payload={"request": {}, "response": response})

    out = tmp_path / "monitor"
    code = main(["monitor", "drift", "--store", str(store.path), "--window", WINDOW, "--registry",
                 str(tmp_path / "registry"), "--audit", str(tmp_path / "audit.db"), "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "drift.json").read_text())
    parts = splitter.split_dates(panel.dates)
    assert "production forecasters (lstm-forecaster v0001)" in report["reference"]["source"]
    assert report["reference"]["window"] == [str(parts["train"][0]), str(parts["train"][-1])]
    forecasts = {p["name"]: p for p in report["predictions"]}
    assert list(forecasts) == ["forecast_5d", "forecast_20d", "target_weights"]
    for name in ("forecast_5d", "forecast_20d"):
        assert forecasts[name]["reference"] == [str(parts["validation"][0]), str(parts["validation"][-1])]
        assert forecasts[name]["n"] == 6 * in_window.sum() and np.isfinite(forecasts[name]["psi"])
    weights = forecasts["target_weights"]
    assert weights["n"] == weights["n_reference"] == 12 * 7
    assert weights["reference"] == [str(before[0]), str(before[-1])]
    served = np.array(served)  # (24, 7): every weight, CASH included, pooled per window
    assert weights["psi"] == pytest.approx(float(population_stability_index(served[:12].ravel(), served[12:].ravel())))
    # 12 served dates are too few 63-day chunks to calibrate: the configured thresholds apply.
    assert weights["thresholds"]["warning"] == 0.1 and weights["psi"] > 0.25 and weights["level"] == "critical"
    assert any(reason.startswith("target_weights: PSI") for reason in report["reasons"])
    assert report["level"] == "critical"


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("2002-06-03", "--window '2002-06-03': expected START:END as ISO dates, e.g. 2022-10-03:2022-12-28"),
        ("2002-06-31:2002-07-31", "--window '2002-06-31:2002-07-31': expected START:END as ISO dates"),
        ("2002-08-30:2002-06-03", "--window '2002-08-30:2002-06-03': the start 2002-08-30 is after the end 2002-06-03"),
        ("1999-01-04:1999-03-31", "--window 1999-01-04:1999-03-31 reaches outside the store"),
    ],
)
def test_a_bad_window_is_one_line_and_writes_nothing(window, message, store, tmp_path, capsys):
    out = tmp_path / "monitor"
    assert main(["monitor", "drift", "--store", str(store.path), "--window", window, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rayfolio: error: {message}"), captured.err
    assert "Traceback" not in captured.err and not out.exists()


def test_impossible_thresholds_or_a_missing_audit_log_are_one_line(store, tmp_path, capsys):
    argv = ["monitor", "drift", "--store", str(store.path), "--window", WINDOW, "--out", str(tmp_path / "out")]
    assert main([*argv, "--psi-warning", "0.3", "--psi-critical", "0.2"]) == 2
    assert capsys.readouterr().err.startswith("rayfolio: error: --psi-warning 0.3 / --psi-critical 0.2: PSI thresholds")
    assert main([*argv, "--audit", str(tmp_path / "nowhere.db")]) == 2
    assert capsys.readouterr().err == f"rayfolio: error: --audit {tmp_path / 'nowhere.db'}: no audit log there\n"
    assert not (tmp_path / "nowhere.db").exists() and not (tmp_path / "out").exists()


def test_gauges_hold_each_series_psi_and_level(ray_session, monkeypatch):
    from rayfolio.serving import held_gauges

    held: dict[str, tuple[str, dict[str, float]]] = {}

    def hold_gauge(name: str, description: str, tag_key: str, values: dict[str, float]) -> bool:
        held[name] = (tag_key, dict(values))
        return True

    thresholds = {"warning": 0.1, "critical": 0.25, "calibration_chunks": 10}
    features = (SeriesDrift("rsi_14", 0.12, 0.1, 100, 1000, thresholds, "warning"), insufficient("obv", "no values"))
    predictions = (SeriesDrift("forecast_5d", 0.4, 0.3, 100, 1000, thresholds, "critical"),)
    result = DriftResult(("2020-01-01", "2020-03-31"), ("2010-01-01", "2019-12-31"), "test", "now", DriftConfig(),
                         features, predictions)  # fmt: skip
    real = held_gauges.hold_gauge
    monkeypatch.setattr(held_gauges, "hold_gauge", hold_gauge)
    assert export_gauges(result)
    assert held["rayfolio_drift_level"] == ("feature", {"rsi_14": 1, "obv": 0, "forecast_5d": 2})
    tag, psi = held["rayfolio_drift_psi"]
    assert tag == "feature" and psi["rsi_14"] == 0.12 and psi["forecast_5d"] == 0.4 and np.isnan(psi["obv"])
    monkeypatch.setattr(held_gauges, "hold_gauge", real)
    monkeypatch.setattr(ray_session, "is_initialized", lambda: False)
    assert not export_gauges(result)

"""The dense panel with the market-relative features, and the normaliser's two
kinds: rank against a pandas computation, its invariances and point in time, and
the kind's round trip through a card (what the ensemble and the agents rebuild)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rayfolio.data.features import available_features
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.relative import RELATIVE_NAMES, relative_features
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.training.cards import CARD, ForecasterCard, NormalizerParams
from rayfolio.training.config import TrainConfig
from rayfolio.training.panel import Normalizer, Panel, cross_sectional_rank
from rayfolio.training.train import prepare_training_data
from tests.training.card_examples import forecaster_card

SOURCE = SyntheticSource(SyntheticPanelConfig(n_assets=5, n_days=260, seed=5))


@pytest.fixture(scope="module")
def alpha_frame() -> pd.DataFrame:
    return build_features_local(SOURCE, (5, 20), feature_set="alpha158")


def names_of(feature_set: str) -> tuple[str, ...]:
    return tuple(f.name for f in available_features(SOURCE.value_columns, feature_set))


def test_from_frame_appends_the_relative_features_from_float64_returns(alpha_frame):
    names = names_of("alpha158")
    plain = Panel.from_frame(alpha_frame, names, (5, 20))
    panel = Panel.from_frame(alpha_frame, names, (5, 20), relative=True)
    assert plain.feature_names == names and panel.feature_names == (*names, *RELATIVE_NAMES)
    np.testing.assert_array_equal(panel.features[..., : len(names)], plain.features)
    np.testing.assert_array_equal(panel.labels, plain.labels)
    log_returns = alpha_frame.pivot(index="date", columns="symbol", values="ret_1").to_numpy()  # (T, N), float64
    expected = relative_features(log_returns).astype(np.float32)
    np.testing.assert_array_equal(panel.features[..., len(names) :], expected)
    assert np.isfinite(panel.features[-1, :, panel.feature_names.index("resid_mom_60")]).all()


@pytest.fixture(scope="module")
def alpha_store(tmp_path_factory, ray_session) -> FeatureStore:
    out = tmp_path_factory.mktemp("alpha") / "store"
    prepare_feature_store(SOURCE, out, (5, 20), feature_set="alpha158")
    return FeatureStore(out)


def test_from_store_adds_relative_features_for_an_alpha158_store_only(alpha_store, tiny_store):
    panel = Panel.from_store(alpha_store)
    assert alpha_store.cross_sectional_feature_names == RELATIVE_NAMES
    assert panel.feature_names == (*alpha_store.feature_names, *RELATIVE_NAMES)
    assert tiny_store.cross_sectional_feature_names == ()
    assert Panel.from_store(tiny_store).feature_names == tiny_store.feature_names  # a basic store: as before


def random_features(seed: int = 0, shape=(30, 6, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = np.nan
    x[..., 2] = np.round(x[..., 2])  # ties
    return x


def pandas_rank(features: np.ndarray) -> np.ndarray:
    """Each (date, feature) cross-section through pandas' pct rank, mapped to [-1, 1]; NaN and lone assets -> 0."""
    out = np.zeros(features.shape)
    for t in range(features.shape[0]):
        frame = pd.DataFrame(features[t].astype(np.float64))  # (N, F)
        pct = frame.rank(axis=0, pct=True).to_numpy()  # average rank / count, NaN stays NaN
        n = frame.notna().sum(axis=0).to_numpy()[None, :]  # (1, F) assets present
        with np.errstate(invalid="ignore", divide="ignore"):
            mapped = (2 * n * pct - n - 1) / (n - 1)
        out[t] = np.nan_to_num(np.where(n > 1, mapped, 0.0), nan=0.0)
    return out


def test_rank_matches_pandas_and_fits_nothing():
    x = random_features()
    x[4, :, 0] = np.nan
    x[4, 2, 0] = 1.5  # one asset that day: the middle
    normalizer = Normalizer.fit(x[:10], kind="rank")
    assert normalizer.kind == "rank"
    assert normalizer.to_dict() == Normalizer.fit(x[20:] * 100, kind="rank").to_dict()  # nothing from the window
    scaled = normalizer.transform(x)
    assert scaled.dtype == np.float32 and scaled.shape == x.shape
    np.testing.assert_allclose(scaled, pandas_rank(x), atol=1e-6)
    assert scaled[4, 2, 0] == 0 and (scaled[np.isnan(x)] == 0).all()
    assert scaled.min() == -1 and scaled.max() == 1
    # Hand-computed: [3, 1, 2, 2] -> ranks 4, 1, 2.5, 2.5 of 4 -> 1, -1, 0, 0.
    np.testing.assert_allclose(cross_sectional_rank(np.array([[[3.0], [1.0], [2.0], [2.0]]]))[0, :, 0], [1, -1, 0, 0])


def test_rank_is_invariant_to_monotone_transforms():
    x = random_features(1)
    moved = x.copy()
    moved[..., 0] = np.exp(3 * x[..., 0])
    moved[..., 1] = x[..., 1] ** 3 - 7
    normalizer = Normalizer.fit(x, kind="rank")
    np.testing.assert_array_equal(normalizer.transform(moved), normalizer.transform(x))
    zscore = Normalizer.fit(x)
    assert not np.allclose(zscore.transform(moved), zscore.transform(x))


def test_a_dates_ranks_depend_on_that_dates_cross_section_only():
    x = random_features(2)
    changed = x.copy()
    changed[:12] = random_features(3)[:12]  # the past changed
    changed[13:] *= -5  # and the future
    normalizer = Normalizer.fit(x, kind="rank")
    np.testing.assert_array_equal(normalizer.transform(changed)[12], normalizer.transform(x)[12])


def test_kind_round_trips_through_a_card():
    x = random_features(4, shape=(20, 3, 4))
    for kind in ("zscore", "rank"):
        fitted = Normalizer.fit(x, kind=kind)
        assert Normalizer.from_dict(fitted.to_dict()).kind == kind
        card = forecaster_card().model_copy(update={"normalizer": NormalizerParams.of(fitted)})
        again = CARD.validate_json(card.model_dump_json(), strict=True)
        assert isinstance(again, ForecasterCard) and again.normalizer.kind == kind
        rebuilt = again.normalizer.normalizer()  # what the ensemble and the agents do
        assert rebuilt.kind == kind
        np.testing.assert_array_equal(rebuilt.transform(x), fitted.transform(x))
    # A card written before kinds existed loads as the zscore it was.
    old = json.loads(forecaster_card().model_dump_json())
    del old["normalizer"]["kind"]
    assert CARD.validate_json(json.dumps(old), strict=True).normalizer.kind == "zscore"
    with pytest.raises(ValueError, match="one value per feature"):
        NormalizerParams(kind="rank", lower=(-1.0,), upper=(1.0, 1.0), mean=(0.0,), std=(1.0,))
    with pytest.raises(ValueError, match="kind"):
        NormalizerParams(kind="minmax", lower=(-1.0,), upper=(1.0,), mean=(0.0,), std=(1.0,))


def test_prepare_training_data_fits_the_configured_kind(tiny_panel, tiny_splitter):
    quick = dict(hidden=8, window=10, batch_size=16, train_stride=2)
    ranked = prepare_training_data(tiny_panel, tiny_splitter, TrainConfig(normalize="rank", **quick))
    assert ranked.normalizer.kind == "rank"
    np.testing.assert_array_equal(ranked.scaled, np.nan_to_num(cross_sectional_rank(tiny_panel.features), nan=0.0))
    assert prepare_training_data(tiny_panel, tiny_splitter, TrainConfig(**quick)).normalizer.kind == "zscore"

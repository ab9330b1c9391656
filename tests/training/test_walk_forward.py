"""Walk-forward refits on Ray: parallel refits, stitched out-of-sample forecasts, and a failed
refit retried from the searches it had finished."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rayfolio.data.splits import walk_forward
from rayfolio.training import walk_forward as wf
from rayfolio.training.config import ForecastersConfig, ScalingOptions, SearchConfig, TrainConfig

from .conftest import TINY_SPLITS

pytestmark = pytest.mark.slow  # Tune searches on Ray: ~1-3 minutes on 2 cores

TINY = ForecastersConfig(
    families=("lstm",),
    train=TrainConfig(hidden=4, window=10, epochs=1, batch_size=64, patience=1, train_stride=4),
    search=SearchConfig(num_samples=1, hidden=(4,), layers=(1,), window=(10,)),
    scaling=ScalingOptions(num_workers=1, cpus_per_worker=0.45, max_failures=0),
)


@pytest.fixture(scope="module")
def refits(tiny_panel):
    # Refits every 3 months from March 2002: March and June (the panel ends in September).
    return walk_forward(TINY_SPLITS, 3, 20, tiny_panel.dates)[:2]


def test_refits_run_in_parallel_and_stitch_into_one_out_of_sample_series(tiny_panel, refits, tmp_path, ray_session):
    results = wf.run_refits(tiny_panel, refits, TINY, tmp_path, parallel=2, retries=0)
    assert [r.refit.index for r in results] == [0, 1]
    # Each refit's search trained on its own data: its Train runs sit under its own directory, no run is
    # shared, and the chosen checkpoint is its own (two searches at once once shared one registered
    # trainable, so one refit's trials ran on the other's data).
    runs = {}
    for refit, result in zip(refits, results, strict=True):
        here = wf.refit_dir(tmp_path, refit)
        runs[refit.index] = {p.name for p in (here / "tune" / "lstm-search-trials").glob("trial-*")}
        assert Path(result.searches["lstm"].best.checkpoint).is_relative_to(here)
    assert runs[0] and runs[1] and not runs[0] & runs[1]
    stitched = wf.stitch(results)
    t, scores = stitched["lstm"]["test"]
    expected = np.concatenate([tiny_panel.date_index(r.splitter.split_dates(tiny_panel.dates)["test"]) for r in refits])
    np.testing.assert_array_equal(t, expected)
    for result in results:
        parts = result.refit.splitter.split_dates(tiny_panel.dates)
        seen_until = tiny_panel.date_index(np.concatenate([parts["train"], parts["validation"]])).max()
        segment, segment_scores = result.scored["lstm"]["test"]
        # Every forecast of the segment comes after everything the refit was fitted or chosen on ...
        assert segment.min() > seen_until
        # ... and is the one the stitched series carries for that date.
        np.testing.assert_array_equal(scores[np.isin(t, segment)], segment_scores)
    # Each refit fitted its own normaliser on its own training window: the later one saw more days.
    assert not np.allclose(results[0].normalizer.mean, results[1].normalizer.mean)
    for name in ("ridge", "momentum_12_1", "reversal_5d"):
        assert stitched[name]["test"][1].shape == scores.shape


def test_a_failed_refit_is_retried_from_its_finished_searches(tiny_panel, refits, tmp_path, monkeypatch, ray_session):
    config = TINY.model_copy(update={"families": ("lstm", "gat")})
    real, calls = wf.search_family, []

    def gat_fails_once(data, base, *args, **kwargs):
        calls.append(base.family)
        if base.family == "gat" and calls.count("gat") == 1:
            raise RuntimeError("node lost")
        return real(data, base, *args, **kwargs)

    monkeypatch.setattr(wf, "search_family", gat_fails_once)
    (result,) = wf.run_refits(tiny_panel, refits[:1], config, tmp_path, parallel=1, retries=1)
    # The LSTM search finished before the failure: the retry picks it up instead of searching again.
    assert calls == ["lstm", "gat", "gat"]
    assert result.resumed == ["lstm"]
    assert set(result.searches) == {"lstm", "gat"}
    with pytest.raises(RuntimeError, match="node lost"):
        calls.clear()
        wf.run_refits(tiny_panel, refits[1:], config, tmp_path, parallel=1, retries=0)

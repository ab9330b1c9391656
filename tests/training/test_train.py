"""Ray Train: a 2-worker DDP run end to end, resume after a killed worker, losses."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from rayfolio.training.config import ScalingOptions, TrainConfig
from rayfolio.training.train import (
    build_trainer,
    masked_loss,
    predict,
    prepare_training_data,
    run_config,
    train_forecaster,
)

QUICK = dict(hidden=8, window=10, batch_size=16, train_stride=2)


def test_normaliser_sees_only_the_training_split(tiny_panel, tiny_splitter):
    data = prepare_training_data(tiny_panel, tiny_splitter, TrainConfig(**QUICK))
    train_dates = tiny_splitter.split_dates(tiny_panel.dates)["train"]
    rows = tiny_panel.date_index(train_dates)
    expected = np.nanmean(np.clip(tiny_panel.features[rows], data.normalizer.lower, data.normalizer.upper), axis=(0, 1))
    np.testing.assert_allclose(data.normalizer.mean, expected, rtol=1e-5)
    assert data.train_idx.max() < data.val_idx.min()


def test_an_epochs_samples_are_capped_by_growing_the_date_stride(tiny_panel, tiny_splitter):
    n = len(tiny_panel.symbols)
    uncapped = prepare_training_data(tiny_panel, tiny_splitter, TrainConfig(**QUICK)).train_idx
    cap = len(uncapped) * n // 3  # a third of what stride 2 keeps
    capped = prepare_training_data(tiny_panel, tiny_splitter, TrainConfig(**QUICK, asset_days_per_epoch=cap)).train_idx
    assert len(capped) * n <= cap < len(uncapped) * n
    assert capped[0] == uncapped[0]  # the same sample dates, fewer of them
    assert np.all(np.diff(capped) == np.diff(capped)[0]) and np.diff(capped)[0] > 2  # one wider stride
    generous = TrainConfig(**QUICK, asset_days_per_epoch=10**9)
    np.testing.assert_array_equal(prepare_training_data(tiny_panel, tiny_splitter, generous).train_idx, uncapped)
    assert TrainConfig(train_stride=5, asset_days_per_epoch=40_000).date_stride(1700, 400) == 17
    assert TrainConfig(train_stride=5, asset_days_per_epoch=40_000).date_stride(1700, 100) == 5


@pytest.mark.parametrize("family", ["lstm", "gat"])
def test_two_worker_ddp_run_end_to_end(family, tiny_panel, tiny_splitter, tmp_path, ray_session):
    config = TrainConfig(family=family, epochs=2, **QUICK)
    data = prepare_training_data(tiny_panel, tiny_splitter, config)
    trained = train_forecaster(data, config, ScalingOptions(num_workers=2), tmp_path, f"tiny-{family}")
    assert trained.epochs_run == 2 and np.isfinite(trained.val_rank_ic)
    scores = predict(trained.model, data, data.val_idx, config.window)
    assert scores.shape == (len(data.val_idx), len(tiny_panel.symbols), 2)


def test_killed_worker_resumes_from_last_checkpoint(tiny_panel, tiny_splitter, tmp_path, ray_session):
    """SIGKILL one DDP worker mid-run: the run finishes from its last checkpoint, loses at most
    one epoch, and ends where a run without the fault ends (same seed)."""
    import contextlib
    import json

    import psutil

    config = TrainConfig(family="lstm", epochs=6, patience=50, **QUICK)
    data = prepare_training_data(tiny_panel, tiny_splitter, config)
    data_ref = ray_session.put(data)
    scaling = ScalingOptions(num_workers=2, max_failures=2)
    clean = build_trainer(config, data_ref, data.train_idx, scaling, run_config("clean", tmp_path, 0)).fit()
    trainer = build_trainer(config, data_ref, data.train_idx, scaling, run_config("killed", tmp_path, max_failures=2))
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", trainer.fit()))
    runner.start()
    # A checkpoint's files land before the controller registers its report, and
    # registration can trail by more than one short epoch: wait for a third.
    deadline = time.time() + 240
    while len(list((tmp_path / "killed").glob("checkpoint_*"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert len(list((tmp_path / "killed").glob("checkpoint_*"))) >= 3, "no checkpoints before the deadline"
    # Ray titles worker processes "ray::RayTrainWorker..."; only descendants of
    # this test process (its own Ray session) are candidates.
    workers = [
        p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline() or [p.name()])
    ]
    assert workers, "no live training worker to kill"
    os.kill(workers[-1].pid, signal.SIGKILL)
    done = 0  # epochs whose checkpoint was on disk when the worker died
    for meta in (tmp_path / "killed").glob("checkpoint_*/meta.json"):
        with contextlib.suppress(OSError, ValueError):  # being written: not a finished epoch
            done = max(done, json.loads(meta.read_text())["epoch"] + 1)
    runner.join(timeout=300)
    result = outcome["result"]
    assert result.error is None and clean.error is None
    assert result.metrics["epoch"] == clean.metrics["epoch"] == config.epochs - 1
    # The last attempt started from a checkpoint, at most one epoch before the last one on disk.
    assert result.metrics["start_epoch"] >= max(1, done - 1)
    print(f"\nkilled worker: {done} epochs checkpointed at the kill, resumed at epoch "
          f"{result.metrics['start_epoch']}; final val rank IC {result.metrics['val_rank_ic']:.6f} "
          f"vs {clean.metrics['val_rank_ic']:.6f} without the fault")  # fmt: skip
    assert result.metrics["val_rank_ic"] == pytest.approx(clean.metrics["val_rank_ic"], rel=0.01)


def test_losses():
    target = torch.tensor([[[1.0], [2.0], [3.0], [float("nan")]]])  # (B=1, N=4, H=1)
    pred = torch.tensor([[[1.5], [2.0], [2.0], [100.0]]])
    assert masked_loss(pred, target, "mse").item() == pytest.approx((0.25 + 0 + 1) / 3)
    ranks_agree = torch.tensor([[[0.1], [0.2], [0.3], [-5.0]]])
    assert masked_loss(ranks_agree, target, "rank").item() == pytest.approx(0.0, abs=1e-6)
    assert masked_loss(-ranks_agree, target, "rank").item() == pytest.approx(2.0, abs=1e-6)

"""Forecaster training on Ray Train (V2): the per-worker loop and the driver.

The worker loop is plain PyTorch plus ``ray.train.report``: DDP via
``prepare_model`` (gloo on CPU, NCCL with bf16 autocast on GPU), a checkpoint
every epoch (rank 0 writes it), resume from ``get_checkpoint`` after a worker
failure, and early stopping on validation Rank IC. Training dates come from a
Ray Data shard; the dense, normalised panel they index sits once in the
object store and every worker maps it zero-copy.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from rayfolio.data.graph import correlation_neighbours, sector_neighbours
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.training.config import ScalingOptions, TrainConfig
from rayfolio.training.metrics import daily_rank_ic
from rayfolio.training.models import build_model
from rayfolio.training.panel import Normalizer, Panel, sample_dates, standardize_cross_section, windows

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class TrainingData:
    """What every worker needs, shipped once through the object store."""

    scaled: np.ndarray  # (T, N, F) float32, normalised with the training window's statistics
    targets: np.ndarray  # (T, N, H) float32, labels standardised across assets per date
    labels: np.ndarray  # (T, N, H) float32, raw labels (validation Rank IC)
    next_returns: np.ndarray  # (T, N) simple return t -> t+1 (long-short evaluation)
    neighbours: np.ndarray  # (T, N, k) int64, past-only correlation graph
    train_idx: np.ndarray  # date indices of training samples
    val_idx: np.ndarray  # date indices of validation samples
    normalizer: Normalizer
    feature_names: tuple[str, ...]
    horizons: tuple[int, ...]


def prepare_training_data(panel: Panel, splitter: PurgedDateSplitter, config: TrainConfig) -> TrainingData:
    """Normaliser of ``config.normalize``'s kind, fitted on the training split only; windows need
    ``config.window`` days."""
    parts = splitter.split_dates(panel.dates)
    train_rows = panel.date_index(parts["train"])
    normalizer = Normalizer.fit(panel.features[train_rows], kind=config.normalize)
    returns = panel.features[..., panel.feature_names.index("ret_1")]
    neighbours = correlation_neighbours(returns, config.graph_k, config.graph_lookback)  # (T, N, k)
    if panel.sectors is not None and config.graph_sector_k > 0:
        by_sector = sector_neighbours(panel.sectors, config.graph_sector_k)  # (N, s), the same every date
        neighbours = np.concatenate(
            [neighbours, np.broadcast_to(by_sector, (len(neighbours), *by_sector.shape))], axis=2
        )
    train_dates = sample_dates(panel, parts["train"], config.window)
    return TrainingData(
        scaled=normalizer.transform(panel.features),
        targets=standardize_cross_section(panel.labels),
        labels=panel.labels,
        next_returns=panel.next_returns,
        neighbours=neighbours,
        train_idx=train_dates[:: config.date_stride(len(train_dates), len(panel.symbols))],
        val_idx=sample_dates(panel, parts["validation"], config.window),
        normalizer=normalizer,
        feature_names=panel.feature_names,
        horizons=panel.horizons,
    )


def batch_tensors(data: TrainingData, t: np.ndarray, window: int, device: torch.device):
    """(B,) date indices -> x (B, W, N, F), neighbours (B, N, k), targets (B, N, H)."""
    x = torch.from_numpy(windows(data.scaled, t, window)).to(device)
    neighbours = torch.from_numpy(data.neighbours[t]).to(device)
    y = torch.from_numpy(data.targets[t]).to(device)
    return x, neighbours, y


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """MSE on standardised labels, or 1 - Pearson(pred, cross-sectional rank of label).

    pred, target: (B, N, H); NaN targets (no label) are left out.
    """
    mask = torch.isfinite(target)
    if kind == "mse":
        diff = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
        return (diff**2).sum() / mask.sum().clamp(min=1)
    # Ranks of the labels across assets (masked assets rank last, then are masked out).
    filled = torch.where(mask, target, torch.full_like(target, float("inf")))
    ranks = filled.argsort(dim=1).argsort(dim=1).float()
    m = mask.float()
    count = m.sum(dim=1, keepdim=True).clamp(min=2)

    def centred(v: torch.Tensor) -> torch.Tensor:
        return (v - (v * m).sum(dim=1, keepdim=True) / count) * m

    p, r = centred(pred), centred(ranks)
    corr = (p * r).sum(dim=1) / ((p**2).sum(dim=1).sqrt() * (r**2).sum(dim=1).sqrt() + 1e-8)  # (B, H)
    return 1.0 - corr.mean()


@torch.no_grad()
def predict(model: torch.nn.Module, data: TrainingData, t: np.ndarray, window: int, batch: int = 64) -> np.ndarray:
    """Scores (len(t), N, H) for date indices ``t``."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(t), batch):
        idx = t[start : start + batch]
        x, neighbours, _ = batch_tensors(data, idx, window, device)
        out.append(model(x, neighbours).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, data.scaled.shape[1], len(data.horizons)), np.float32)


def validation_rank_ic(model: torch.nn.Module, data: TrainingData, window: int) -> float:
    """Mean over horizons of the mean daily Rank IC on the validation dates."""
    idx = data.val_idx[data.val_idx >= window - 1]
    pred = predict(model, data, idx, window)
    labels = data.labels[idx]
    return float(np.mean([np.nanmean(daily_rank_ic(pred[..., h], labels[..., h])) for h in range(pred.shape[-1])]))


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: plain PyTorch plus report/checkpoint."""
    config = TrainConfig.model_validate(loop_config["train"])
    data: TrainingData = ray.get(loop_config["data_ref"])
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device()
    n_features, n_horizons = data.scaled.shape[-1], len(data.horizons)
    model = build_model(config.family, config.model_kwargs(n_features, n_horizons))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, best, stale = 0, -np.inf, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resuming after a failure (or a restarted run): pick up where the last epoch ended
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        logger.warning("resuming %s from %s at epoch %d", config.family, checkpoint.path, start_epoch)
    model = ray.train.torch.prepare_model(model)  # DDP when there is more than one worker
    core = model.module if hasattr(model, "module") else model
    use_bf16 = device.type == "cuda"
    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()

    world = ray.train.get_context().get_world_size()
    for epoch in range(start_epoch, config.epochs):
        # Each epoch's randomness (dropout) from the seed and the epoch alone: a run resumed from
        # a checkpoint repeats exactly what an uninterrupted run would have done.
        torch.manual_seed(config.seed * 100_003 + epoch)
        model.train()
        losses, samples, started = [], 0, time.perf_counter()
        for batch in shard.iter_batches(batch_size=config.batch_size, batch_format="numpy"):
            samples += len(batch["t"])
            x, neighbours, y = batch_tensors(data, batch["t"], config.window, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                pred = model(x, neighbours)
            loss = masked_loss(pred.float(), y, config.loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        train_seconds = time.perf_counter() - started
        # Every rank scores the same weights on the same dates, so all agree on stopping.
        score = validation_rank_ic(core, data, config.window)
        if score > best:
            best, stale = score, 0
        else:
            stale += 1
        metrics = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_rank_ic": score,
            "best_val_rank_ic": best,
            "start_epoch": start_epoch,
            # Throughput of the training pass alone (validation excluded), all workers.
            "train_seconds": train_seconds,
            "train_samples": samples * world,
        }
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0:
                state = {"model": core.state_dict(), "optimizer": optimizer.state_dict()}
                torch.save({**state, "epoch": epoch, "best": best, "stale": stale}, Path(directory) / STATE_FILE)
                (Path(directory) / META_FILE).write_text(json.dumps({"train": config.model_dump(), **metrics}))
                saved = Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=saved)
        if stale >= config.patience:
            break


@dataclass(frozen=True)
class TrainedModel:
    config: TrainConfig
    model: torch.nn.Module
    val_rank_ic: float
    epochs_run: int
    checkpoint_path: str


def scaling_config(options: ScalingOptions) -> ScalingConfig:
    use_gpu = options.use_gpu if options.use_gpu is not None else bool(ray.cluster_resources().get("GPU", 0))
    return ScalingConfig(
        num_workers=options.num_workers,
        use_gpu=use_gpu,
        resources_per_worker={"CPU": options.cpus_per_worker},
        placement_strategy=options.placement_strategy,
    )


def build_trainer(
    config: TrainConfig,
    data_ref: ray.ObjectRef,
    train_idx: np.ndarray,
    scaling: ScalingOptions,
    run: RunConfig,
) -> TorchTrainer:
    dates = ray.data.from_items([{"t": int(t)} for t in train_idx if t >= config.window - 1])
    dates.context.enable_progress_bars = False  # one bar per epoch per worker drowns the run's output
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(), "data_ref": data_ref},
        scaling_config=scaling_config(scaling),
        run_config=run,
        datasets={"train": dates},
    )


def run_config(name: str, storage: Path, max_failures: int, callbacks: list | None = None) -> RunConfig:
    return RunConfig(
        name=name,
        storage_path=str(storage),
        failure_config=FailureConfig(max_failures=max_failures),
        checkpoint_config=CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="val_rank_ic", checkpoint_score_order="max"
        ),
        callbacks=callbacks or [],
    )


def load_checkpoint_model(path: str | Path, data: TrainingData) -> tuple[TrainConfig, torch.nn.Module, dict]:
    """Model and metadata from a checkpoint directory written by the loop."""
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    config = TrainConfig.model_validate(meta["train"])
    model = build_model(config.family, config.model_kwargs(data.scaled.shape[-1], len(data.horizons)))
    model.load_state_dict(torch.load(path / STATE_FILE, weights_only=True)["model"])
    return config, model.eval(), meta


def train_forecaster(
    data: TrainingData, config: TrainConfig, scaling: ScalingOptions, storage: Path, name: str
) -> TrainedModel:
    """Train one configuration on Ray Train; returns the best epoch's model."""
    data_ref = ray.put(data)
    trainer = build_trainer(config, data_ref, data.train_idx, scaling, run_config(name, storage, scaling.max_failures))
    result = trainer.fit()
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1]["val_rank_ic"])
    with best_checkpoint.as_directory() as directory:
        config, model, _ = load_checkpoint_model(directory, data)
    return TrainedModel(config, model, best_metrics["val_rank_ic"], result.metrics["epoch"] + 1, best_checkpoint.path)

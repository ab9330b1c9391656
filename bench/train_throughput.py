"""LSTM training throughput: Ray Train DDP (2 workers) vs a plain PyTorch loop.

    python bench/train_throughput.py [--assets 20 --days 3000 --epochs 4]

Same model, same data (a synthetic panel of the embedded sample's shape), same
batch size and the same total threads: the plain loop runs torch with 2
threads, DDP runs 2 workers of 1 thread each. A sample is one date (every
asset's window). The first epoch of each is warm-up and not counted; Ray's
start-up is printed separately. Prints figures; passes or fails nothing.
On a GPU machine ``--gpu`` also times a single-GPU bf16 loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rayfolio.training.config import ScalingOptions, TrainConfig
from rayfolio.training.models import build_model
from rayfolio.training.panel import Normalizer
from rayfolio.training.train import TrainingData, batch_tensors, masked_loss


def synthetic_data(assets: int, days: int, features: int, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(days, assets, features)).astype(np.float32)
    labels = (0.1 * raw[..., :3] + rng.normal(size=(days, assets, 3))).astype(np.float32)
    split = int(days * 0.8)
    norm = Normalizer.fit(raw[:split])
    return TrainingData(
        scaled=norm.transform(raw),
        targets=labels,
        labels=labels,
        next_returns=rng.normal(0, 0.01, (days, assets)),
        neighbours=np.broadcast_to(np.arange(assets)[None, :, None], (days, assets, 1)).copy(),
        train_idx=np.arange(60, split),
        val_idx=np.arange(split, days),
        normalizer=norm,
        feature_names=tuple(f"f{i}" for i in range(features)),
        horizons=(5, 20, 60),
    )


def plain_loop(data: TrainingData, config: TrainConfig, threads: int, device: str = "cpu") -> list[float]:
    """Samples/s per epoch of a single-process loop."""
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    dev = torch.device(device)
    model = build_model("lstm", config.model_kwargs(data.scaled.shape[-1], 3)).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(config.epochs):
        order = rng.permutation(data.train_idx)
        start = time.perf_counter()
        for i in range(0, len(order), config.batch_size):
            x, nb, y = batch_tensors(data, order[i : i + config.batch_size], config.window, dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                pred = model(x, nb)
            loss = masked_loss(pred.float(), y, config.loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(len(order) / (time.perf_counter() - start))
    return rates


def ddp(data: TrainingData, config: TrainConfig, workers: int) -> tuple[list[float], float]:
    """Samples/s per epoch of Ray Train DDP, and the run's wall time."""
    import ray

    from rayfolio.training.train import build_trainer, run_config

    ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as storage:
        scaling = ScalingOptions(num_workers=workers, cpus_per_worker=1.0, max_failures=0)
        trainer = build_trainer(config, ray.put(data), data.train_idx, scaling, run_config("bench", Path(storage), 0))
        start = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - start
        history = result.metrics_dataframe
    ray.shutdown()
    return list(history["train_samples"] / history["train_seconds"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=20)
    parser.add_argument("--days", type=int, default=3000)
    parser.add_argument("--features", type=int, default=18)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="also time a single-GPU bf16 plain loop")
    args = parser.parse_args()

    data = synthetic_data(args.assets, args.days, args.features)
    config = TrainConfig(family="lstm", hidden=args.hidden, window=args.window, epochs=args.epochs,
                         batch_size=args.batch_size, patience=args.epochs + 1)  # fmt: skip
    plain = plain_loop(data, config, threads=args.workers)
    distributed, wall = ddp(data, config, args.workers)
    plain_rate, ddp_rate = float(np.mean(plain[1:])), float(np.mean(distributed[1:]))
    print(
        f"LSTM hidden {args.hidden}, window {args.window}: {args.assets} assets, {len(data.train_idx)} training dates"
    )
    print(f"{'loop':<42}{'samples/s':>12}")
    print(f"{f'plain PyTorch, 1 process x {args.workers} threads':<42}{plain_rate:>12,.1f}")
    print(f"{f'Ray Train DDP (gloo), {args.workers} workers x 1 thread':<42}{ddp_rate:>12,.1f}")
    print(f"ratio DDP / plain: {ddp_rate / plain_rate:.2f}x (target >= 0.85x)")
    print(f"(DDP run wall time {wall:.1f}s for {args.epochs} epochs, start-up and validation included)")
    if args.gpu and torch.cuda.is_available():
        gpu = plain_loop(data, config, threads=args.workers, device="cuda")
        print(f"{'single GPU, bf16 autocast':<42}{float(np.mean(gpu[1:])):>12,.1f}")


if __name__ == "__main__":
    main()

"""The Run section's size rows: the universe, the budgets that shrink with it, the parallelism."""

from __future__ import annotations

import ray

from rayfolio.cluster.config import RunConfig
from rayfolio.cluster.scale import cluster_shape, forecaster_rows
from rayfolio.training.panel import sample_dates
from tests.training.conftest import tiny_panel, tiny_splitter, tiny_store  # noqa: F401  (fixtures)


def _config(train: dict) -> RunConfig:
    return RunConfig.model_validate({"forecasters": {"train": train, "scaling": {"num_workers": 2}}})


def test_the_rows_state_the_stride_the_cap_forces_and_what_runs_at_once(tiny_panel, tiny_splitter):  # noqa: F811
    n = len(tiny_panel.symbols)
    dates = sample_dates(tiny_panel, tiny_splitter.split_dates(tiny_panel.dates)["train"], 10)
    cap = -(-len(dates) * n // 7)  # a seventh of every date's samples: the stride grows from 2 to 7
    rows = forecaster_rows(_config({"window": 10, "train_stride": 2, "asset_days_per_epoch": cap}), tiny_panel,
                           tiny_splitter, n_refits=3)  # fmt: skip
    kept = len(dates[::7])
    assert rows["forecaster training dates per epoch (first refit)"] == (
        f"{kept:,} of {len(dates):,} (1 in 7; cap {cap:,} date x asset samples, train_stride 2)"
    )
    uncapped = forecaster_rows(_config({"window": 10, "train_stride": 2}), tiny_panel, tiny_splitter, n_refits=3)
    assert uncapped["forecaster training dates per epoch (first refit)"].endswith(
        "(1 in 2; cap none date x asset samples, train_stride 2)"
    )
    cpus = ray.cluster_resources()["CPU"]
    # One CPU stays with Ray Data; each trial holds 2 x 0.45 + 0.01 CPU (training/tune.py's rule).
    at_once = max(1, int((cpus - 1) // 0.91))
    assert rows["forecaster trials at once (each a DDP run)"] == f"{at_once} x 2 workers x 0.45 CPU"
    assert rows["walk-forward refits at once"] == f"{min(3, at_once)} of 3"
    assert cluster_shape().startswith(f"1 node(s), {cpus:g} CPUs")


def test_the_main_job_explains_fewer_latest_dates_as_the_universe_grows():
    from rayfolio.cluster.explanation_refresh import DEFAULT_DAYS, latest_days

    assert [latest_days(n) for n in (20, 100, 200, 400, 10**6)] == [DEFAULT_DAYS, DEFAULT_DAYS, 7, 3, 1]


def test_explanation_tasks_split_per_cpu_once_a_date_outweighs_a_tasks_loading():
    from rayfolio.cluster.explanation_refresh import chunk_dates

    dates = list(range(15))
    # The quickstart's 20 assets: at least 4 dates a task, so 15 dates on 2 CPUs are 8 + 7.
    assert [len(c) for c in chunk_dates(dates, 2, 20)] == [8, 7]
    assert [len(c) for c in chunk_dates(dates[:3], 2, 20)] == [3]
    # 400 assets: a date alone outweighs the loading, so the budget's 3 dates use both CPUs.
    assert [len(c) for c in chunk_dates(dates[:3], 2, 400)] == [2, 1]
    assert chunk_dates(dates[:3], 8, 400) == [[0], [1], [2]]
    # Never more than MAX_CHUNK a task, every date once, in order.
    many = list(range(100))
    chunks = chunk_dates(many, 1, 400)
    assert [d for c in chunks for d in c] == many and max(map(len, chunks)) == 25
    assert chunk_dates([], 2, 400) == []

"""Concurrent calls go to one batch; errors reach every caller of the batch."""

from __future__ import annotations

import asyncio

import pytest

from rayfolio.serving.batching import Batcher


def test_concurrent_calls_share_a_batch_and_each_gets_its_own_answer():
    batches = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 2 for i in items]

    async def main() -> list[int]:
        batcher = Batcher(run, max_size=3, wait_s=0.01)
        return list(await asyncio.gather(*(batcher(i) for i in range(5))))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert batches == [[0, 1, 2], [3, 4]]  # full at 3, the rest after the wait


def test_an_error_reaches_every_caller_of_its_batch():
    async def run(items: list[int]) -> list[int]:
        raise RuntimeError("models gone")

    async def main() -> list:
        batcher = Batcher(run, max_size=8, wait_s=0.001)
        return list(await asyncio.gather(*(batcher(i) for i in range(3)), return_exceptions=True))

    results = asyncio.run(main())
    assert len(results) == 3 and all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        raise results[0]

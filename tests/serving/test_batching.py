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


def test_past_max_running_arrivals_wait_for_a_running_batch_and_then_go_together():
    batches, release = [], None

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()  # the first batch holds the only slot
        return items

    async def main() -> list[int]:
        nonlocal release
        release = asyncio.Event()
        batcher = Batcher(run, max_size=32, wait_s=0.001, max_running=1)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.sleep(0.01)  # batch [0] runs
        later = [asyncio.ensure_future(batcher(i)) for i in range(1, 6)]
        await asyncio.sleep(0.02)  # well past wait_s: still waiting, the slot is taken
        assert batches == [[0]]
        release.set()
        return [await first] + [await f for f in later]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, 5]
    assert batches == [[0], [1, 2, 3, 4, 5]]  # one batch, not one per wait_s


def test_a_batch_never_exceeds_max_size_even_after_waiting():
    batches = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.005)
        return items

    async def main() -> list[int]:
        batcher = Batcher(run, max_size=4, wait_s=0.001, max_running=1)
        return list(await asyncio.gather(*(batcher(i) for i in range(10))))

    assert asyncio.run(main()) == list(range(10))
    assert [len(b) for b in batches] == [4, 4, 2]

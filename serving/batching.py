"""Concurrent calls decided together: callers ``await batcher(item)``; items that arrive within
``wait_s`` of the first (up to ``max_size``) go to one ``run(items)`` call. Like Serve's
``@serve.batch``, but it needs no Serve replica around it, so the same app and deployments run
in a replica, in a test or in a batch job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], max_size: int = 32, wait_s: float = 0.002):
        self.run, self.max_size, self.wait_s = run, max_size, wait_s
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()  # held until done (the loop keeps only weak references)

    async def __call__(self, item: T) -> R:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_size:
            self._start()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.wait_s, self._start)
        return await future

    def _start(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        try:
            results = await self.run([item for item, _ in batch])
        except Exception as err:  # every caller of the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

"""Concurrent calls decided together: callers ``await batcher(item)``; items that arrive within
``wait_s`` of the first (up to ``max_size``) go to one ``run(items)`` call. Like Serve's
``@serve.batch``, but it needs no Serve replica around it, so the same app and deployments run
in a replica, in a test or in a batch job.

``max_running`` bounds the batches in progress at once (group commit): past it, arrivals wait for a
running batch to finish and then go together. Under load the batches grow with the load instead of
the wait, and every per-batch cost (an audit transaction, a policy pass) is paid once for more
requests; alone, a request still waits only ``wait_s``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], max_size: int = 32, wait_s: float = 0.002,
                 max_running: int | None = None) -> None:  # fmt: skip
        self.run, self.max_size, self.wait_s, self.max_running = run, max_size, wait_s, max_running
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
        while self._pending and (self.max_running is None or len(self._running) < self.max_running):
            batch, self._pending = self._pending[: self.max_size], self._pending[self.max_size :]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if self._pending:  # what waited for a free slot goes now, together
            self._start()

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

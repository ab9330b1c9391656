"""One small least-recently-used cache: per-date forecasts (in the Ensemble and in the ingress)
and per-date market states (in the risk filters) use it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``size`` values; the least recently used is dropped first. ``hits`` and ``misses``
    count lookups by key (a service metric)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cache size must be >= 1, got {size}")
        self.size = size
        self.hits = self.misses = 0
        self._values: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        self._values.clear()

    def missing(self, keys: Iterable[K]) -> list[K]:
        """The distinct keys not cached, in first-seen order; counts a hit or a miss per key."""
        keys = list(keys)
        absent = list(dict.fromkeys(k for k in keys if k not in self._values))
        missed = sum(k not in self._values for k in keys)
        self.hits += len(keys) - missed
        self.misses += missed
        return absent

    def _fill(self, keys: list[K], wanted: list[K], values: Iterable[V]) -> list[V]:
        for key, value in zip(wanted, values, strict=True):
            self._values[key] = value
        for key in keys:  # the wanted keys become the most recent, then the oldest go
            self._values.move_to_end(key)
        out = [self._values[k] for k in keys]
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return out

    def get_many(self, keys: Iterable[K], compute: Callable[[list[K]], Iterable[V]]) -> list[V]:
        """The value of every key, in order; ``compute`` gets the missing keys (once each) in one call."""
        keys = list(keys)
        wanted = self.missing(keys)
        return self._fill(keys, wanted, compute(wanted) if wanted else ())

    async def aget_many(self, keys: Iterable[K], compute: Callable[[list[K]], Awaitable[Iterable[V]]]) -> list[V]:
        """``get_many`` with an asynchronous ``compute`` (a deployment handle's call)."""
        keys = list(keys)
        wanted = self.missing(keys)
        return self._fill(keys, wanted, await compute(wanted) if wanted else ())

    def get(self, key: K, compute: Callable[[K], V]) -> V:
        """One key's value, computed on a miss."""
        (value,) = self.get_many([key], lambda missing: [compute(k) for k in missing])
        return value

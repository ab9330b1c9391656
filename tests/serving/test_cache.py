"""The one cache type: least recently used dropped first, each missing key computed once."""

from __future__ import annotations

import asyncio

import pytest

from rayfolio.serving.cache import LruCache


def test_missing_keys_are_computed_once_in_one_call_and_hits_counted():
    calls = []
    cache = LruCache[int, str](size=3)
    assert cache.get_many([2, 1, 2], lambda ks: calls.append(ks) or [f"v{k}" for k in ks]) == ["v2", "v1", "v2"]
    assert cache.get_many([1, 3], lambda ks: calls.append(ks) or [f"v{k}" for k in ks]) == ["v1", "v3"]
    assert calls == [[2, 1], [3]]
    assert (cache.hits, cache.misses) == (1, 4)  # the repeated 2 in the first call missed twice (one compute)


def test_the_least_recently_used_goes_first():
    cache = LruCache[int, int](size=2)
    cache.get_many([1, 2], lambda ks: ks)
    cache.get(1, lambda k: -1)  # 1 is now the most recent
    cache.get(3, lambda k: k)
    assert cache.missing([1]) == [] and cache.missing([2]) == [2] and len(cache) == 2


def test_async_compute_and_clear():
    cache = LruCache[int, int](size=4)

    async def fetch(keys: list[int]) -> list[int]:
        return [k * 10 for k in keys]

    assert asyncio.run(cache.aget_many([1, 2, 1], fetch)) == [10, 20, 10]
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="size must be >= 1"):
        LruCache(0)

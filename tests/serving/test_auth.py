"""API keys from the environment or a file, and the per-key rate limit."""

from __future__ import annotations

import pytest

from rayfolio.serving.auth import KeyConfigError, RateLimiter, find_key, load_api_keys

USER, ADMIN = "u" * 20, "a" * 24


def test_keys_from_the_environment_and_a_file(tmp_path):
    keys = load_api_keys({"RAYFOLIO_API_KEYS": f"{USER}, {ADMIN}:admin"})
    assert [(k.key, k.admin) for k in keys] == [(USER, False), (ADMIN, True)]
    path = tmp_path / "keys"
    path.write_text(f"# team keys\n{USER}\n\n{ADMIN}:admin\n")
    assert load_api_keys({"RAYFOLIO_API_KEYS_FILE": str(path)}) == keys
    assert load_api_keys({}) == ()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RAYFOLIO_API_KEYS": "short"}, "RAYFOLIO_API_KEYS entry 1: a key must be at least 16 characters"),
        ({"RAYFOLIO_API_KEYS": f"{USER}:root"}, "RAYFOLIO_API_KEYS entry 1: unknown scope 'root'"),
        ({"RAYFOLIO_API_KEYS": f"{USER},{USER}:admin"}, "the same key is listed twice"),
        ({"RAYFOLIO_API_KEYS_FILE": "/no/such/file"}, "RAYFOLIO_API_KEYS_FILE=/no/such/file: cannot read"),
    ],
)
def test_bad_key_configuration_is_named(environ, message):
    with pytest.raises(KeyConfigError, match=message):
        load_api_keys(environ)


def test_find_key():
    keys = load_api_keys({"RAYFOLIO_API_KEYS": f"{USER},{ADMIN}:admin"})
    assert find_key(keys, ADMIN).admin and not find_key(keys, USER).admin
    assert find_key(keys, USER[:-1]) is None and find_key(keys, "") is None


def test_rate_limit_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("k")[0] for _ in range(4)] == [True, True, True, False]
    allowed, retry_after = limiter.allow("k")
    assert not allowed and retry_after == pytest.approx(0.5)
    assert limiter.allow("other")[0]  # per key
    now[0] += 0.5
    assert limiter.allow("k") == (True, 0.0)
    assert not limiter.allow("k")[0]

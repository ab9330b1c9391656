"""The explanation store: what is put is what is got, keyed by model versions and method, and a
file being written (or left half-written by a crash) is never read."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from rayfolio.explain.attributions import OTHER_ASSETS, Attribution
from rayfolio.explain.store import ExplanationStore, attributions_of, default_root, explanation_rows

VERSIONS = {"lstm-forecaster": "v0001", "gat-forecaster": "v0002"}
METHOD = "eg1,m=8,rows=16,bg=abc,seed=0"


def explained(seed: int = 0) -> dict[int, Attribution]:
    rng = np.random.default_rng(seed)
    groups = ("ret_20", "rsi_14", OTHER_ASSETS)
    return {h: Attribution(("AAA", "BBB", "CCC", "DDD"), rng.normal(size=4), rng.normal(size=4), groups,
                           rng.normal(size=(4, 3))) for h in (5, 20, 60)}  # fmt: skip


def assert_same(got: dict[int, Attribution], want: dict[int, Attribution]) -> None:
    assert sorted(got) == sorted(want)
    for h, a in want.items():
        b = got[h]
        assert b.symbols == a.symbols and b.groups == a.groups
        for field in ("values", "base_values", "contributions"):
            np.testing.assert_array_equal(getattr(b, field), getattr(a, field))


def test_rows_are_long_and_read_back_exactly():
    rows = explanation_rows("2022-12-28", explained())
    assert list(rows.columns) == ["date", "symbol", "horizon", "expected_return", "base_value", "group", "contribution"]
    assert len(rows) == 3 * 4 * 3 and set(rows["date"]) == {"2022-12-28"}
    assert_same(attributions_of(rows), explained())


def test_put_then_get_from_another_replica_and_keys_by_versions_and_method(tmp_path):
    writer = ExplanationStore(tmp_path, VERSIONS, METHOD)
    reader = ExplanationStore(tmp_path, dict(reversed(VERSIONS.items())), METHOD)  # same versions, any order
    assert reader.get("2022-12-28") is None  # nothing yet: a miss, and its index is empty
    writer.put("2022-12-28", explained())
    assert_same(reader.get("2022-12-28"), explained())  # the miss refreshed the index from the directory
    assert reader.dates() == {"2022-12-28"}
    assert ExplanationStore(tmp_path, {**VERSIONS, "gat-forecaster": "v0003"}, METHOD).get("2022-12-28") is None
    assert ExplanationStore(tmp_path, VERSIONS, METHOD.replace("m=8", "m=16")).get("2022-12-28") is None
    assert '"models": "gat-forecaster=v0002,lstm-forecaster=v0001"' in (writer.path / "key.json").read_text()


def test_default_root_is_next_to_the_feature_store(tmp_path):
    run = tmp_path / "runs" / "quickstart"
    assert default_root(run / "features") == run / "explanations"


def test_a_crashed_write_leaves_nothing_readable_and_no_debris(tmp_path, monkeypatch):
    store = ExplanationStore(tmp_path, VERSIONS, METHOD)
    store.path.mkdir(parents=True)
    (store.path / ".2022-12-27.0123abcd.tmp").write_bytes(b"PAR1 half a file")  # another writer, mid-write
    assert store.get("2022-12-27") is None and store.dates() == set()

    def crash(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put("2022-12-28", explained())
    assert store.get("2022-12-28") is None
    assert sorted(p.name for p in store.path.iterdir()) == [".2022-12-27.0123abcd.tmp", "key.json"]


def test_concurrent_writers_of_one_date_never_show_a_reader_a_partial_file(tmp_path):
    want = explained()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        store = ExplanationStore(tmp_path, VERSIONS, METHOD)
        while not stop.is_set():
            try:
                store.put("2022-12-28", want)
            except BaseException as err:  # reported below: a writer's failure fails the test
                errors.append(err)

    writers = [threading.Thread(target=write) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        reads = 0
        while reads < 40:
            reader = ExplanationStore(tmp_path, VERSIONS, METHOD)  # a fresh replica: no cache, reads the file
            got = reader.get("2022-12-28")
            # Once the date exists it stays whole: a truncated or half-written file would read as a miss.
            assert got is not None or reads == 0
            if got is not None:
                assert_same(got, want)
                reads += 1
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert not errors
    left = ExplanationStore(tmp_path, VERSIONS, METHOD).path.iterdir()
    assert [p.name for p in left if p.name.endswith(".tmp")] == []

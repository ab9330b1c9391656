"""Every kind of bad input is refused with an error naming file, line/row,
(date, symbol), column and rule, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rayfolio.data.schema import PanelValidationError
from rayfolio.data.sources import file_source
from rayfolio.data.store import FeatureStore, FeatureStoreError, prepare_feature_store
from tests.data.panels import small_panel, write_csv

HEADER = "date,symbol,open,high,low,close,volume\n"
GOOD = [
    "2020-01-02,AAA,10,11,9,10.5,1000",
    "2020-01-03,AAA,10.5,11.5,10,11,1200",
    "2020-01-06,AAA,11,12,10.5,11.5,900",
    "2020-01-02,BBB,20,21,19,20.5,500",
    "2020-01-03,BBB,20.5,21,20,20.8,700",
]


def csv_with(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "prices.csv") -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(rows) + ("\n" if rows else ""))
    return path


def refused(path: Path, tmp_path: Path) -> PanelValidationError:
    out = tmp_path / "store"
    with pytest.raises(PanelValidationError) as caught:
        prepare_feature_store(file_source(str(path)), out, (5,))
    assert not out.exists(), "refused input must write nothing"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store")], "no partial store left behind"
    return caught.value


# (rows after the header, expected fragments of the message)
CASES = {
    "non-numeric": (
        [*GOOD[:2], "2020-01-06,AAA,11,12,10.5,abc,900"],
        ["line 4", "column 'close'", "not a number", "'abc'"],
    ),
    "NaN price": (
        [*GOOD[:2], "2020-01-06,AAA,11,12,10.5,NaN,900"],
        ["line 4", "(2020-01-06, AAA)", "column 'close'", "missing or NaN"],
    ),
    "empty cell": (
        [*GOOD[:2], "2020-01-06,AAA,11,12,10.5,,900"],
        ["line 4", "(2020-01-06, AAA)", "column 'close'", "missing or NaN"],
    ),
    "inf price": ([*GOOD[:2], "2020-01-06,AAA,11,inf,10.5,11,900"], ["line 4", "column 'high'", "infinite"]),
    "zero price": (
        [GOOD[0], "2020-01-03,AAA,0,11.5,10,11,1200"],
        ["line 3", "(2020-01-03, AAA)", "column 'open'", "> 0"],
    ),
    "negative price": (
        [*GOOD[:4], "2020-01-03,BBB,20.5,21,20,-20.8,700"],
        ["line 6", "(2020-01-03, BBB)", "column 'close'", "> 0"],
    ),
    "high below low": (
        [GOOD[0], "2020-01-03,AAA,10.5,9.5,10,10,1200"],
        ["line 3", "column 'high'", "high must be >= low"],
    ),
    "close above high": (
        [GOOD[0], "2020-01-03,AAA,10.5,11.5,10,12,1200"],
        ["line 3", "column 'close'", "within [low, high]"],
    ),
    "open below low": (
        [GOOD[0], "2020-01-03,AAA,9,11.5,10,11,1200"],
        ["line 3", "column 'open'", "within [low, high]"],
    ),
    "negative volume": ([GOOD[0], "2020-01-03,AAA,10.5,11.5,10,11,-5"], ["line 3", "column 'volume'", ">= 0"]),
    "duplicate": (
        [*GOOD, "2020-01-03,AAA,10.5,11.5,10,11,1200"],
        ["line 7", "(2020-01-03, AAA)", "duplicate (date, symbol)", "line 3"],
    ),
    "unparseable date": (
        [GOOD[0], "2020-13-45,AAA,10.5,11.5,10,11,1200"],
        ["line 3", "column 'date'", "unparseable date", "2020-13-45"],
    ),
    "mixed time zones": (
        ["2020-01-02T00:00:00-05:00,AAA,10,11,9,10.5,1000", "2020-01-03T00:00:00,AAA,10.5,11.5,10,11,1200"],
        ["line 3", "column 'date'", "mixed time zones"],
    ),
    "zones far apart": (
        ["2020-01-02T00:00:00-05:00,AAA,10,11,9,10.5,1000", "2020-01-03T00:00:00+09:00,AAA,10.5,11.5,10,11,1200"],
        ["line 3", "mixed time zones", "-05:00 and +09:00"],
    ),
    "header only": ([], ["prices.csv", "empty"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_csv_is_refused_with_a_named_error(case, tmp_path, ray_session):
    rows, fragments = CASES[case]
    path = csv_with(tmp_path, *rows)
    message = str(refused(path, tmp_path))
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_required_column(tmp_path, ray_session):
    path = csv_with(tmp_path, "2020-01-02,AAA,10", header="date,symbol,price\n")
    error = refused(path, tmp_path)
    assert error.column == "close" and "missing required column" in str(error)


def test_empty_file(tmp_path, ray_session):
    path = tmp_path / "in" / "prices.csv"
    path.parent.mkdir()
    path.write_text("")
    assert "file is empty" in str(refused(path, tmp_path))


def test_duplicate_across_files_names_both(tmp_path, ray_session):
    csv_with(tmp_path, *GOOD, name="a.csv")
    csv_with(tmp_path, "2020-01-03,BBB,20.5,21,20,20.8,700", "2020-01-07,BBB,20.5,21,20,20.8,700", name="b.csv")
    message = str(refused(tmp_path / "in", tmp_path))
    assert "(2020-01-03, BBB)" in message and "duplicate (date, symbol)" in message
    assert "a.csv, line 6" in message and "b.csv, line 2" in message


def test_parquet_rows_are_numbered(tmp_path, ray_session):
    frame = small_panel(n_assets=2, n_days=30)
    frame.loc[17, "volume"] = -1.0
    path = tmp_path / "in" / "p.parquet"
    path.parent.mkdir()
    frame.to_parquet(path, index=False)
    error = refused(path, tmp_path)
    assert "p.parquet, row 18" in str(error) and error.column == "volume"
    assert error.symbol == frame.loc[17, "symbol"]


def test_wide_file_names_the_symbol_column(tmp_path, ray_session):
    path = csv_with(tmp_path, "2020-01-02,1.5,2.5", "2020-01-03,1.6,-2.4", header="Date,AAA,BBB\n")
    error = refused(path, tmp_path)
    assert "line 3" in str(error) and error.column == "BBB" and "> 0" in str(error)


def test_missing_path_and_wrong_kind(tmp_path):
    with pytest.raises(PanelValidationError, match="no such file or directory"):
        file_source(str(tmp_path / "nope.csv"))
    (tmp_path / "notes.txt.bak").write_text("x")
    with pytest.raises(PanelValidationError, match="not a CSV or Parquet file"):
        file_source(str(tmp_path / "notes.txt.bak"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PanelValidationError, match="holds no CSV or Parquet files"):
        file_source(str(tmp_path / "empty"))


def test_refused_input_leaves_previous_store_intact(tmp_path, ray_session):
    good = write_csv(small_panel(n_assets=2, n_days=40), tmp_path / "good" / "p.csv")
    out = tmp_path / "store"
    prepare_feature_store(file_source(str(good)), out, (5,))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = csv_with(tmp_path, GOOD[0], "2020-01-03,AAA,10.5,11.5,10,11,-5")
    with pytest.raises(PanelValidationError):
        prepare_feature_store(file_source(str(bad)), out, (5,))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_refuses_to_overwrite_a_directory_that_is_not_a_store(tmp_path, ray_session):
    good = write_csv(small_panel(n_assets=2, n_days=40), tmp_path / "good" / "p.csv")
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not lose me")
    with pytest.raises(FeatureStoreError, match="refusing to replace"):
        prepare_feature_store(file_source(str(good)), out, (5,))
    assert (out / "thesis.tex").read_text() == "do not lose me"


def test_unsorted_input_is_sorted_not_refused(tmp_path, ray_session):
    frame = small_panel(n_assets=2, n_days=40)
    ordered = write_csv(frame, tmp_path / "a" / "p.csv")
    shuffled = write_csv(frame.sample(frac=1.0, random_state=0), tmp_path / "b" / "p.csv")
    prepare_feature_store(file_source(str(ordered)), tmp_path / "store-a", (5,))
    prepare_feature_store(file_source(str(shuffled)), tmp_path / "store-b", (5,))
    a, b = (FeatureStore(tmp_path / s).to_pandas() for s in ("store-a", "store-b"))
    assert len(a) == len(frame)
    pd.testing.assert_frame_equal(a, b)


def test_mixed_time_zones_across_files(tmp_path, ray_session):
    csv_with(tmp_path, *GOOD[:3], name="a.csv")
    csv_with(tmp_path, "2020-01-02T00:00:00-05:00,BBB,20,21,19,20.5,500", name="b.csv")
    message = str(refused(tmp_path / "in", tmp_path))
    assert "b.csv, line 2" in message and "mixed time zones" in message and "a.csv, line 2" in message


def test_sector_must_be_constant_per_symbol_and_present(tmp_path, ray_session):
    header = "date,symbol,sector,close\n"
    path = csv_with(tmp_path, "2020-01-02,AAA,tech,10", "2020-01-03,AAA,energy,11", header=header)
    message = str(refused(path, tmp_path))
    assert "line 3 (2020-01-03, AAA), column 'sector': sector changes within a symbol" in message
    path = csv_with(tmp_path, "2020-01-02,AAA,tech,10", "2020-01-03,AAA,,11", header=header, name="b.csv")
    assert "sector is missing" in str(refused(path, tmp_path))


def test_sector_is_carried_into_the_store(tmp_path, ray_session):
    path = csv_with(tmp_path, "2020-01-02,AAA,tech,10", "2020-01-03,AAA,tech,11", "2020-01-02,BBB,energy,5",
                    header="date,symbol,sector,close\n")  # fmt: skip
    prepare_feature_store(file_source(str(path)), tmp_path / "store", (5,))
    stored = FeatureStore(tmp_path / "store").to_pandas()
    assert dict(zip(stored["symbol"], stored["sector"], strict=True)) == {"AAA": "tech", "BBB": "energy"}

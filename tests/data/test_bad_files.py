"""A corpus of malformed price files: each one refused with the error that names
what is wrong and where, and nothing written."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayfolio.cluster.cli import main
from rayfolio.data.schema import PanelValidationError
from rayfolio.data.sources import file_source
from rayfolio.data.store import prepare_feature_store

HEADER = "date,symbol,open,high,low,close,volume\n"
GOOD = "2020-01-02,AAA,10,11,9,10.5,1000\n2020-01-03,AAA,10.5,11,10,10.8,1200\n"


def _parquet(truncate: bool = False) -> bytes:
    table = pa.table({"date": ["2020-01-02", "2020-01-03"], "symbol": ["AAA", "AAA"], "close": [10.0, 10.5]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    return data[: len(data) // 2] if truncate else data


# name, file name, content, the error's expected text
CORPUS = [
    ("negative price", "p.csv", HEADER + GOOD + "2020-01-06,AAA,10,11,9,-1,1000\n",
     "line 4 (2020-01-06, AAA), column 'close': price must be > 0"),
    ("zero price", "p.csv", HEADER + "2020-01-02,AAA,0,11,9,10,5\n", "column 'open': price must be > 0"),
    ("NaN price", "p.csv", HEADER + "2020-01-02,AAA,10,11,9,NaN,5\n", "value is missing or NaN"),
    ("infinite price", "p.csv", HEADER + "2020-01-02,AAA,10,11,9,inf,5\n", "value is infinite"),
    ("text in a number column", "p.csv", HEADER + "2020-01-02,AAA,10,11,9,ten,5\n", "value is not a number"),
    ("missing date", "p.csv", HEADER + GOOD + ",AAA,10,11,9,10,5\n", "date is missing"),
    ("unparseable date", "p.csv", HEADER + "2020-13-45,AAA,10,11,9,10,5\n", "unparseable date"),
    ("mixed time zones", "p.csv", "date,symbol,close\n2020-01-02T00:00:00+00:00,AAA,10\n2020-01-03,AAA,11\n",
     "mixed time zones"),
    ("duplicate date and symbol", "p.csv", HEADER + GOOD + "2020-01-02,AAA,10,11,9,10,5\n",
     "duplicate (date, symbol)"),
    ("high below low", "p.csv", HEADER + "2020-01-02,AAA,10,9,11,10,5\n", "high must be >= low"),
    ("close outside the bar", "p.csv", HEADER + "2020-01-02,AAA,10,11,9,12,5\n", "close must lie within [low, high]"),
    ("negative volume", "p.csv", HEADER + "2020-01-02,AAA,10,11,9,10,-5\n", "volume must be >= 0"),
    ("no date column", "p.csv", "day,symbol,close\n2020-01-02,AAA,10\n", "column 'date': missing required column"),
    ("no close column", "p.csv", "date,symbol,open\n2020-01-02,AAA,10\n", "column 'close': missing required column"),
    ("a column twice", "p.csv", "date,symbol,Close,close\n2020-01-02,AAA,10,10\n", "column appears twice"),
    ("header only", "p.csv", HEADER, "file is empty"),
    ("zero bytes", "p.csv", "", "file is empty"),
    ("missing symbol", "p.csv", HEADER + GOOD + "2020-01-06,,10,11,9,10,5\n", "symbol is missing"),
    ("every cell empty", "p.csv", "date,AAA,BBB\n2020-01-02,,\n", "file has no prices"),
    ("formula injection in a symbol", "p.csv", HEADER + '2020-01-02,"=HYPERLINK(""http://x"")",10,11,9,10,5\n',
     "symbol must be 1-32 letters"),
    ("formula injection in a wide header", "p.csv", "date,AAA,@SUM(A1:A9)\n2020-01-02,10,11\n",
     "column '@SUM(A1:A9)': symbol must be 1-32 letters"),
    ("command injection in a symbol", "p.csv", HEADER + "2020-01-02,-2+3+cmd|' /C calc'!A0,10,11,9,10,5\n",
     "symbol must be 1-32 letters"),
    ("non-UTF-8 text", "p.csv", (HEADER + "2020-01-02,AAA,10,11,9,10,5\n2020-01-03,\xc4\xd6\xdc,10,11,9,10,5\n")
     .encode("latin-1"), "not a readable CSV file: In CSV column #1: CSV conversion error to string: invalid UTF8"),
    ("truncated Parquet", "p.parquet", _parquet(truncate=True), "not a readable Parquet file"),
    ("not a price file", "p.json", '{"date": "2020-01-02"}\n', "not a CSV or Parquet file"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "filename", "content", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_a_malformed_file_is_refused_by_name_and_nothing_is_written(
    name, filename, content, expected, tmp_path, ray_session, capsys
):
    source = tmp_path / "prices" / filename
    source.parent.mkdir()
    source.write_bytes(content.encode() if isinstance(content, str) else content)
    out = tmp_path / "store"
    assert main(["data", "prepare", "--source", str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"rayfolio: error: {source}") and expected in error, error
    assert "Traceback" not in error
    assert not out.exists()
    # The CLI refused it in process, before Ray; the Ray Data path (large or remote inputs) runs the
    # same checks and must refuse it with the same words.
    with pytest.raises(PanelValidationError) as on_ray:
        prepare_feature_store(file_source(str(source)), out, (5,))
    assert error == f"rayfolio: error: {on_ray.value}"
    assert not out.exists()


def test_the_good_rows_of_the_corpus_are_accepted(tmp_path, ray_session):
    """The corpus's base file is valid: each refusal above is the one broken thing."""
    source = tmp_path / "p.csv"
    source.write_text(HEADER + GOOD)
    assert main(["data", "prepare", "--source", str(source), "--out", str(tmp_path / "store")]) == 0


@pytest.mark.parametrize("path", ["prices/../../../../etc/passwd", "../../../../../../etc/shadow.csv"])
def test_a_path_that_climbs_out_is_refused_like_any_other(path, tmp_path, ray_session, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", "--source", path, "--out", str(tmp_path / "store")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"rayfolio: error: {path}") and (
        "not a CSV or Parquet file" in error or "no such file or directory" in error
    ), error
    assert not (tmp_path / "store").exists()

"""Each price source, the Yahoo one through yfinance's own code fed with Yahoo-format answers."""
import datetime as dt

import numpy as np
import pytest
import requests

from jobs.sources import (
    CsvSource,
    NoPriceData,
    RateLimited,
    SourceUnavailable,
    SyntheticSource,
    UnknownSymbol,
    YahooSource,
)
from tests.conftest import weekdays, write_prices
from tests.fake_yahoo import chart_body, session_for

# --- CSV ---------------------------------------------------------------------------------

def test_csv_source_reads_the_last_year_of_closes(tmp_path):
    days = weekdays("2022-01-03", 600)
    write_prices(tmp_path, "AAPL", days, [float(i) for i in range(600)])
    history = CsvSource(str(tmp_path)).history("AAPL")
    assert history.dates[-1] == days[-1]
    assert history.dates[0] > days[-1] - dt.timedelta(days=366)
    assert 250 <= len(history.closes) <= 262
    assert history.closes[-1] == 599.0 and history.source == "csv"


def test_csv_source_reads_files_without_adj_close_and_skips_missing_closes(tmp_path):
    days = weekdays("2023-01-02", 5)
    write_prices(tmp_path, "MSFT", days, [1.0, None, 3.0, 4.0, 5.0], adj_close=False)
    history = CsvSource(str(tmp_path)).history("MSFT")
    assert list(history.closes) == [1.0, 3.0, 4.0, 5.0]
    assert days[1] not in history.dates


def test_csv_source_reports_a_missing_file_as_unknown_symbol(tmp_path):
    with pytest.raises(UnknownSymbol, match="NOPE"):
        CsvSource(str(tmp_path)).history("NOPE")


def test_csv_source_reports_a_file_without_close_column(tmp_path):
    (tmp_path / "ODD.csv").write_text("Date,Price\n2024-01-02,3\n")
    with pytest.raises(NoPriceData, match="Date and Close"):
        CsvSource(str(tmp_path)).history("ODD")


def test_csv_source_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        CsvSource(str(tmp_path / "absent"))


# --- synthetic ---------------------------------------------------------------------------

def test_synthetic_source_is_deterministic_per_symbol_and_labelled():
    source = SyntheticSource()
    first, again, other = source.history("AAPL"), source.history("AAPL"), source.history("MSFT")
    assert np.array_equal(first.closes, again.closes)
    assert not np.array_equal(first.closes, other.closes)
    assert first.source == "synthetic" and len(first.closes) == len(first.dates) == 252
    assert all(d.weekday() < 5 for d in first.dates)


def test_synthetic_source_knows_no_symbol_starting_with_nope():
    with pytest.raises(UnknownSymbol):
        SyntheticSource().history("NOPE")


# --- Yahoo (yfinance's own code, offline) ------------------------------------------------

@pytest.fixture
def yahoo(tmp_path):
    """A YahooSource whose HTTP session answers from `charts`, which each test fills."""
    charts: dict = {}
    session, fake = session_for(charts)
    return YahooSource(str(tmp_path / "yfcache"), timeout=5, session=session), charts, fake


def test_yahoo_source_parses_a_chart_answer_through_yfinance(yahoo):
    source, charts, fake = yahoo
    days = weekdays("2025-11-03", 30)
    closes = [100.0 + i * 0.5 for i in range(30)]
    charts["AAPL"] = (200, chart_body("AAPL", days, closes))
    history = source.history("AAPL")
    assert history.dates == days
    assert np.allclose(history.closes, closes)
    assert history.source == "yahoo"
    assert any("/v8/finance/chart/AAPL" in url and "range=1y" in url for url in fake.urls)


@pytest.mark.parametrize(
    "symbol, answer, error, words",
    [
        ("UNKNOWN", None, UnknownSymbol, "no such symbol"),  # Yahoo's 404 "No data found" answer
        ("LIMITED", (429, "Too Many Requests"), RateLimited, "rate limiting"),
        ("REFUSED", requests.ConnectionError("connection refused"), SourceUnavailable, "could not be reached"),
        ("SLOW", requests.Timeout("read timed out"), SourceUnavailable, "could not be reached"),
        ("GARBAGE", (200, "<html>not json</html>"), SourceUnavailable, "could not be read"),
        ("DOWN", (503, "<html>Will be right back</html>"), SourceUnavailable, "could not be read"),
        ("NORESULT", (200, {"chart": {"result": [], "error": None}}), SourceUnavailable, "could not be read"),
    ],
)
def test_yahoo_failures_are_told_apart_in_plain_words(yahoo, symbol, answer, error, words):
    source, charts, _ = yahoo
    if answer is not None:
        charts[symbol] = answer
    with pytest.raises(error, match=words) as raised:
        source.history(symbol)
    assert str(raised.value).startswith(f"{symbol}: ")


def test_yahoo_failures_after_the_time_zone_is_known_are_still_told_apart(yahoo):
    source, charts, _ = yahoo
    charts["KNOWN"] = (200, chart_body("KNOWN", weekdays("2025-11-03", 5), [1.0, 2.0, 3.0, 4.0, 5.0]))
    source.history("KNOWN")  # yfinance now has KNOWN's time zone cached and goes straight to the chart
    charts["KNOWN"] = (429, "Too Many Requests")
    with pytest.raises(RateLimited):
        source.history("KNOWN")
    charts["KNOWN"] = (200, {"chart": {"result": [], "error": None}})
    with pytest.raises(NoPriceData):
        source.history("KNOWN")
    charts["KNOWN"] = (503, "<html>Will be right back</html>")
    with pytest.raises(SourceUnavailable, match="says it is down"):
        source.history("KNOWN")


def test_yahoo_chart_without_bars_is_no_data(yahoo):
    source, charts, _ = yahoo
    charts["EMPTY"] = (200, chart_body("EMPTY", [], []))
    with pytest.raises(NoPriceData, match="no daily prices"):
        source.history("EMPTY")

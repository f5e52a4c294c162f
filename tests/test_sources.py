"""Each price source, the Yahoo one through yfinance's own code fed with Yahoo-format answers."""
import datetime as dt

import numpy as np
import pytest
import requests

from jobs.records import trading_day
from jobs.sources import (
    CachedSource,
    CsvSource,
    NoPriceDataError,
    PriceDataError,
    RateLimitedError,
    SourceUnavailableError,
    SyntheticSource,
    UnknownSymbolError,
    YahooSource,
    source_name,
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
    with pytest.raises(UnknownSymbolError, match="NOPE"):
        CsvSource(str(tmp_path)).history("NOPE")


def test_csv_source_reports_a_file_without_close_column(tmp_path):
    (tmp_path / "ODD.csv").write_text("Date,Price\n2024-01-02,3\n")
    with pytest.raises(NoPriceDataError, match="Date and Close"):
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
    with pytest.raises(UnknownSymbolError):
        SyntheticSource().history("NOPE")


# --- Yahoo (yfinance's own code, offline) ------------------------------------------------

@pytest.fixture
def yahoo(tmp_path):
    """A YahooSource whose HTTP session answers from `charts`, which each test fills; it records its sleeps."""
    charts: dict = {}
    session, fake = session_for(charts)
    sleeps: list[float] = []
    source = YahooSource(str(tmp_path / "yfcache"), timeout=5, session=session, retries=2, backoff=0.5,
                         sleep=sleeps.append)
    return source, charts, fake, sleeps


def test_yahoo_source_parses_a_chart_answer_through_yfinance(yahoo):
    source, charts, fake, _ = yahoo
    days = weekdays("2025-11-03", 30)
    closes = [100.0 + i * 0.5 for i in range(30)]
    body = chart_body("AAPL", days, closes)
    adjusted = [close * 0.9 for close in closes]  # as after a dividend: Yahoo's adjusted closes differ from its closes
    body["chart"]["result"][0]["indicators"]["adjclose"] = [{"adjclose": adjusted}]
    charts["AAPL"] = (200, body)
    history = source.history("AAPL")
    assert history.dates == days
    assert np.allclose(history.closes, adjusted), "the adjusted closes, asked for explicitly"
    assert history.source == "yahoo" and history.adjusted is True
    charts_asked = [url for url in fake.urls if "/v8/finance/chart/" in url]
    assert len(charts_asked) == 1 and "range=1y" in charts_asked[0], "one call per fresh symbol: no time-zone lookup"


@pytest.mark.parametrize(
    "symbol, answer, error, words",
    [
        ("UNKNOWN", None, UnknownSymbolError, "no such symbol"),  # Yahoo's 404 "No data found" answer
        ("LIMITED", (429, "Too Many Requests"), RateLimitedError, "rate limiting"),
        ("REFUSED", requests.ConnectionError("connection refused"), SourceUnavailableError, "could not be reached"),
        ("SLOW", requests.Timeout("read timed out"), SourceUnavailableError, "could not be reached"),
        ("GARBAGE", (200, "<html>not json</html>"), SourceUnavailableError, "could not be read"),
        ("DOWN", (503, "<html>Will be right back</html>"), SourceUnavailableError, "says it is down"),
        ("NORESULT", (200, {"chart": {"result": [], "error": None}}), NoPriceDataError, "no daily prices"),
    ],
)
def test_yahoo_failures_are_told_apart_in_plain_words(yahoo, symbol, answer, error, words):
    source, charts, _, _ = yahoo
    if answer is not None:
        charts[symbol] = answer
    with pytest.raises(error, match=words) as raised:
        source.history(symbol)
    assert str(raised.value).startswith(f"{symbol}: ")


def test_yahoo_failures_after_the_time_zone_is_known_are_still_told_apart(yahoo):
    source, charts, _, _ = yahoo
    charts["KNOWN"] = (200, chart_body("KNOWN", weekdays("2025-11-03", 5), [1.0, 2.0, 3.0, 4.0, 5.0]))
    source.history("KNOWN")  # yfinance now has KNOWN's time zone cached and goes straight to the chart
    charts["KNOWN"] = (429, "Too Many Requests")
    with pytest.raises(RateLimitedError):
        source.history("KNOWN")
    charts["KNOWN"] = (200, {"chart": {"result": [], "error": None}})
    with pytest.raises(NoPriceDataError):
        source.history("KNOWN")
    charts["KNOWN"] = (503, "<html>Will be right back</html>")
    with pytest.raises(SourceUnavailableError, match="says it is down"):
        source.history("KNOWN")


def test_yahoo_chart_without_bars_is_no_data(yahoo):
    source, charts, _, _ = yahoo
    charts["EMPTY"] = (200, chart_body("EMPTY", [], []))
    with pytest.raises(NoPriceDataError, match="no daily prices"):
        source.history("EMPTY")


def chart_calls(fake, symbol: str) -> int:
    return sum(f"/v8/finance/chart/{symbol}?" in url and "range=1y" in url for url in fake.urls)


def test_a_rate_limited_fetch_is_retried_after_a_jittered_backoff(yahoo):
    source, charts, fake, sleeps = yahoo
    charts["BUSY"] = (200, chart_body("BUSY", weekdays("2025-11-03", 5), [1.0, 2.0, 3.0, 4.0, 5.0]))
    source.history("BUSY")  # time zone now cached: each attempt is one chart call
    fake.urls.clear()
    limited = (429, "Too Many Requests")  # yfinance itself asks twice (a second cookie strategy) before raising
    charts["BUSY"] = [limited, limited, (200, chart_body("BUSY", weekdays("2025-11-03", 5), [5.0] * 5))]
    assert list(source.history("BUSY").closes) == [5.0] * 5
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_persistent_failures_give_up_after_the_retries_with_growing_backoff(yahoo):
    source, charts, fake, sleeps = yahoo
    charts["FLAKY"] = (200, chart_body("FLAKY", weekdays("2025-11-03", 5), [1.0] * 5))
    source.history("FLAKY")
    fake.urls.clear()
    charts["FLAKY"] = (429, "Too Many Requests")
    with pytest.raises(RateLimitedError):
        source.history("FLAKY")
    assert chart_calls(fake, "FLAKY") >= 3, "one try and two retries"
    assert len(sleeps) == 2 and sleeps[0] <= 0.5 and sleeps[1] <= 1.0


def test_jitter_spreads_the_waits(tmp_path):
    sleeps: list[float] = []
    session, _ = session_for({"X": (429, "Too Many Requests")})
    source = YahooSource(str(tmp_path / "c"), session=session, retries=1, backoff=1.0, sleep=sleeps.append)
    for _ in range(20):
        with pytest.raises(RateLimitedError):
            source.history("X")
    assert len(set(sleeps)) > 15 and max(sleeps) <= 1.0


def test_an_unknown_symbol_is_not_retried(yahoo):
    source, _, _, sleeps = yahoo
    with pytest.raises(UnknownSymbolError):
        source.history("NOSUCH")
    assert sleeps == []


def test_retries_stop_when_the_time_budget_would_be_exceeded(tmp_path):
    sleeps: list[float] = []
    session, _ = session_for({"X": requests.ConnectionError("refused")})
    source = YahooSource(str(tmp_path / "c"), timeout=5, session=session, retries=5, backoff=0.1, budget=4,
                         sleep=sleeps.append)
    with pytest.raises(SourceUnavailableError):
        source.history("X")
    assert sleeps == [], "a retry plus its 5 s fetch timeout would not fit in the 4 s budget"


# --- the shared price cache --------------------------------------------------------------

class CountingSource:
    """A source that counts its fetches, to see which lookups the cache answered."""

    name = "synthetic"
    adjusted = False

    def __init__(self):
        self.fetches = 0

    def history(self, symbol):
        self.fetches += 1
        return SyntheticSource().history(symbol)


def test_the_price_cache_fetches_once_and_serves_the_same_prices_after(redis_client):
    inner = CountingSource()
    cached = CachedSource(inner, redis_client, ttl=60)
    first, second = cached.history("AAPL"), cached.history("AAPL")
    assert inner.fetches == 1
    assert second.dates == first.dates and np.array_equal(second.closes, first.closes)
    assert second.source == "synthetic"
    assert redis_client.hgetall("trends:stats:prices") == {b"lookups": b"2", b"misses": b"1"}
    (key,) = redis_client.keys("trends:prices:synthetic:AAPL:*")
    assert key.decode().endswith(":" + trading_day()), "the same day as the shared job ids, on every host"
    assert 0 < redis_client.ttl(key) <= 60
    stored = redis_client.hgetall(key)
    assert len(stored[b"days"]) == 4 * 252 and len(stored[b"closes"]) == 8 * 252, "raw numpy bytes, no pickle"


def test_the_price_cache_does_not_keep_errors(redis_client):
    inner = CountingSource()
    cached = CachedSource(inner, redis_client, ttl=60)
    for _ in range(2):
        with pytest.raises(UnknownSymbolError):
            cached.history("NOPE")
    assert inner.fetches == 2


def test_a_price_source_setting_names_the_source_its_results_say(tmp_path):
    assert source_name("synthetic") == SyntheticSource().name
    assert source_name(f"csv:{tmp_path}") == CsvSource(str(tmp_path)).name
    assert source_name("yahoo") == YahooSource.name


@pytest.mark.parametrize("line, said", [
    ("2024-01-05,inf", "line 5 of the price file has a close that is not a finite number ('2024-01-05', 'inf')"),
    ("2024-01-05,abc", "line 5 of the price file has a close that is not a finite number ('2024-01-05', 'abc')"),
    ("2024-13-45,3.5", "line 5 of the price file has a date that is not one (YYYY-MM-DD) ('2024-13-45', '3.5')"),
])
def test_a_price_file_with_a_bad_row_is_no_usable_data_said_where(tmp_path, line, said):
    """inf, text or a bad date in a row: the symbol's own error in words (no data, not retried), not "unexpected"."""
    (tmp_path / "BAD.csv").write_text("Date,Close\n2024-01-02,3.0\n2024-01-03,null\n2024-01-04,3.2\n" + line + "\n")
    with pytest.raises(NoPriceDataError) as refused:
        CsvSource(str(tmp_path)).history("BAD")
    assert str(refused.value) == f"BAD: {said}; fix or remove it"
    assert issubclass(NoPriceDataError, PriceDataError), "a price-data error: failed at once, counted as no_data"


def test_the_price_cache_keeps_each_price_source_setting_apart(redis_client, tmp_path):
    """Two CSV folders (or a folder and the synthetic source) on one Redis never serve each other's prices."""
    for folder, close in (("one", 1.0), ("two", 2.0)):
        (tmp_path / folder).mkdir()
        write_prices(tmp_path / folder, "AAPL", weekdays("2025-01-02", 30), [close] * 30)
    got = [CachedSource(CsvSource(str(tmp_path / folder)), redis_client, 60, f"csv:{tmp_path / folder}").history("AAPL")
           for folder in ("one", "two")]
    assert [history.closes[-1] for history in got] == [1.0, 2.0]

"""Price sources: where a year of daily closes comes from (Yahoo, a CSV folder, or synthetic).

Every source has a `name` (reported as `source` in each result) and `history(symbol)`, which
returns a PriceHistory or raises a PriceDataError whose message a person can read.
"""
import datetime as dt
import functools
import itertools
import logging
import os
import random
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import requests
import yfinance as yf
from numpy.typing import ArrayLike
from pandas.errors import Pandas4Warning
from redis import Redis
from redis.exceptions import RedisError
from yfinance.data import YfData
from yfinance.exceptions import YFDataException, YFPricesMissingError, YFRateLimitError, YFTickerMissingError

from config import Config, yahoo_rate_per_second
from jobs import records
from jobs.connection import connect
from jobs.governor import Governor, PutBack
from jobs.yahoo_transport import yahoo_session

log = logging.getLogger(__name__)
# yfinance 1.7 uses pandas features that pandas 3.1 deprecates: a dozen warnings in every worker's log, none ours to fix.
warnings.filterwarnings("ignore", category=Pandas4Warning, module="yfinance")

TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class PriceHistory:
    """A year of daily closes, oldest first, the source that gave them, and whether they are adjusted."""

    symbol: str
    dates: list[dt.date]
    closes: np.ndarray
    source: str
    adjusted: bool  # for splits and dividends, as each source says of itself


class PriceSource(Protocol):
    """What every source offers: its name, and one symbol's daily closes."""

    name: str
    adjusted: bool  # whether its closes are adjusted for splits and dividends
    worth_caching: bool  # whether reading the shared price cache is cheaper than asking the source again

    def history(self, symbol: str) -> PriceHistory:
        """Give a year of `symbol`'s daily closes, or raise a PriceDataError a person can read."""


class PriceDataError(Exception):
    """One symbol's prices could not be had; the message is shown to the user as is."""


class UnknownSymbolError(PriceDataError):
    """The source has no such symbol (unknown or delisted)."""


class NoPriceDataError(PriceDataError):
    """The symbol exists but has no daily closes for the last year."""


class RateLimitedError(PriceDataError):
    """The source refused the request for now (HTTP 429); worth retrying later."""


class SourceUnavailableError(PriceDataError):
    """The source could not be reached or gave an answer that could not be read."""


def _history(symbol: str, source: str, adjusted: bool, dates: ArrayLike, closes: ArrayLike) -> PriceHistory:
    """Build a PriceHistory from parallel dates/closes, dropping missing closes."""
    frame = pd.DataFrame({"close": np.asarray(closes, dtype=float)}, index=pd.DatetimeIndex(dates))
    frame = frame.dropna().sort_index()
    if not np.isfinite(frame["close"].to_numpy()).all():
        raise NoPriceDataError(f"{symbol}: the {source} source gave a close that is not a finite number")
    if frame.empty:
        raise NoPriceDataError(f"{symbol}: the {source} source has no daily closes for the last year")
    return PriceHistory(symbol, [d.date() for d in frame.index], frame["close"].to_numpy(), source, adjusted)


class YahooSource:
    """Yahoo Finance through yfinance: one year of daily bars per symbol.

    Transient failures (network, garbage or empty answers; a rate limit without a governor) are retried with
    exponential backoff and full jitter, within a time budget that keeps the job under its timeout.
    """

    name = "yahoo"
    adjusted = True  # asked for explicitly (auto_adjust=True): splits and dividends
    worth_caching = True
    transient = (RateLimitedError, SourceUnavailableError, NoPriceDataError)

    def __init__(self, cache_dir: str, timeout: float = 10, session: requests.Session | None = None, retries: int = 2,
                 backoff: float = 1.0, budget: float = 20, sleep: Callable[[float], None] = time.sleep,
                 governor: Governor | None = None) -> None:
        os.makedirs(cache_dir, exist_ok=True)
        # yfinance keeps time-zone and cookie caches in SQLite files; one project folder
        # (WAL mode) instead of the user's home directory that every process would share blindly.
        yf.set_tz_cache_location(cache_dir)
        # Raise instead of logging and returning an empty frame, so failures can be told apart.
        yf.config.debug.hide_exceptions = False
        self._yf = yf
        self._timeout = timeout
        self._session = session
        self._retries = retries
        self._backoff = backoff
        self._budget = budget
        self._sleep = sleep
        self._governor = governor

    def warm_up(self) -> None:
        """Get yfinance's cookie and crumb once, before the workers fork: they inherit them instead of each asking Yahoo.

        Best effort: a worker whose parent could not get them asks itself.
        """
        if self._governor:
            self._governor.calls_may_wait(self._timeout)
        try:
            YfData(session=self._session)._get_cookie_and_crumb(timeout=self._timeout)  # yfinance's own login step
        except Exception as exc:  # noqa: BLE001 (any failure just leaves it to the first fetch)
            log.warning("could not get Yahoo's cookie and crumb ahead of the workers (%r); each worker will", exc)
            _forget_a_refused_crumb()
        if self._session:
            self._session.close()  # no pooled connection may be shared by the forked workers

    def history(self, symbol: str) -> PriceHistory:
        """Fetch `symbol`'s year of closes, retrying transient failures while the time budget allows."""
        deadline = time.monotonic() + self._budget
        for attempt in itertools.count():
            try:
                return self._fetch(symbol, deadline)
            except self.transient as exc:
                if isinstance(exc, RateLimitedError) and self._governor:  # the 429 cooled the egress down:
                    self._governor.defer_after_429()  # the job comes back after it
                delay = random.uniform(0, self._backoff * 2**attempt)
                if attempt == self._retries or time.monotonic() + delay + self._timeout > deadline:
                    raise
                log.info("retrying %s in %.2f s after: %s", symbol, delay, exc)
                self._sleep(delay)

    def _fetch(self, symbol: str, deadline: float) -> PriceHistory:
        """Make one call for the year of bars, once the egress's governor gives it a slot (PutBack if it won't in time)."""
        if self._governor:
            self._governor.acquire(deadline - time.monotonic() - self._timeout, self._governor.running_job_is_interactive())
        try:
            ticker = self._yf.Ticker(symbol, session=self._session)
            # yfinance first asks Yahoo for a fresh symbol's time zone in a call of its own (a second call per
            # symbol against the budget); with a period and daily bars it uses it only in log text, and dates
            # come from the answer's own exchange time zone. Our one call still tells an unknown symbol (404).
            ticker._tz = "UTC"
            # Closes adjusted for splits and dividends, said explicitly: the result reports it ("adjusted").
            frame = ticker.history(period="1y", interval="1d", auto_adjust=True, timeout=self._timeout)
        except PutBack:  # a call of this fetch could not have its slot (raised through yfinance by the transport)
            raise
        except Exception as exc:  # yfinance raises many kinds: HTTP, network, parsing, its own
            log.warning("yahoo fetch of %s failed: %r", symbol, exc)
            _forget_a_refused_crumb()
            raise _plain_yahoo_error(symbol, exc) from None
        if frame.empty or "Close" not in frame:
            raise NoPriceDataError(f"{symbol}: Yahoo Finance returned no daily prices for the last year")
        return _history(symbol, self.name, self.adjusted, frame.index.tz_localize(None), frame["Close"])


def _forget_a_refused_crumb() -> None:
    """Drop the crumb yfinance kept from a refused crumb call ("Too Many Requests"), so the next call asks again.

    yfinance (1.7) stores a 429's body as its crumb and sends it with every later call.
    """
    data = YfData()
    crumb = getattr(data, "_crumb", None)
    if crumb and ("Too Many Requests" in crumb or "<" in crumb):
        data._crumb = None


def _plain_yahoo_error(symbol: str, exc: Exception) -> PriceDataError:
    """Tell apart unknown symbol, rate limit, HTTP failure, network failure and garbage."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, YFRateLimitError) or status == 429:
        return RateLimitedError(f"{symbol}: Yahoo Finance is rate limiting requests; try again in a minute")
    if isinstance(exc, YFPricesMissingError) and exc.yahoo_reason is None:
        return NoPriceDataError(f"{symbol}: Yahoo Finance returned no daily prices for the last year")
    if isinstance(exc, YFTickerMissingError) or status == 404:
        return UnknownSymbolError(f"{symbol}: Yahoo Finance has no such symbol (unknown or delisted)")
    if status:
        return SourceUnavailableError(f"{symbol}: Yahoo Finance answered with HTTP error {status}")
    if isinstance(exc, YFDataException):
        return SourceUnavailableError(f"{symbol}: Yahoo Finance says it is down; try again later")
    if isinstance(exc, ValueError):  # checked first: requests' JSONDecodeError is an OSError too
        return SourceUnavailableError(f"{symbol}: Yahoo Finance gave an answer that could not be read")
    if isinstance(exc, OSError):  # requests' and curl_cffi's network errors are OSErrors
        return SourceUnavailableError(f"{symbol}: Yahoo Finance could not be reached ({type(exc).__name__})")
    return SourceUnavailableError(f"{symbol}: Yahoo Finance gave an answer that could not be read")


class CsvSource:
    """A folder of SYMBOL.csv files in Yahoo's export format; the last year of each file is used."""

    name = "csv"
    adjusted = False  # the file's Close column as it is (Yahoo's export: split-adjusted only; Adj Close unused)
    worth_caching = True

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise ValueError(f"PRICE_SOURCE csv folder {folder!r} does not exist")
        self.folder = folder

    def history(self, symbol: str) -> PriceHistory:
        """Read the last year of `symbol`'s file."""
        frame = self._read(symbol)
        last_year = frame[frame["Date"] > frame["Date"].max() - pd.DateOffset(years=1)]
        return _history(symbol, self.name, self.adjusted, last_year["Date"], last_year["Close"])

    def full_history(self, symbol: str) -> PriceHistory:
        """Every close in the file, for evaluations over many years."""
        frame = self._read(symbol)
        return _history(symbol, self.name, self.adjusted, frame["Date"], frame["Close"])

    def _read(self, symbol: str) -> pd.DataFrame:
        path = os.path.join(self.folder, f"{symbol}.csv")
        if os.sep in symbol or not os.path.isfile(path):
            raise UnknownSymbolError(f"{symbol}: no price file for this symbol in the CSV folder")
        try:
            frame = pd.read_csv(path, usecols=["Date", "Close"], dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise NoPriceDataError(f"{symbol}: the price file is not a Yahoo-format CSV with Date and Close ({exc})") from None
        if frame.empty:
            raise NoPriceDataError(f"{symbol}: the price file has no rows")
        dates = pd.to_datetime(frame["Date"].str.strip(), errors="coerce", format="ISO8601")
        text = frame["Close"].str.strip()
        missing = text.str.lower().isin(["", "null", "nan"])  # Yahoo's mark for a day without a close: skipped
        closes = pd.to_numeric(text.mask(missing), errors="coerce")
        for bad, what in ((dates.isna(), "a date that is not one (YYYY-MM-DD)"),
                          ((closes.isna() & ~missing) | np.isinf(closes), "a close that is not a finite number")):
            if bad.any():  # no usable data, said where: a file to fix, not a failure to retry
                row = int(bad.to_numpy().argmax())
                raise NoPriceDataError(f"{symbol}: line {row + 2} of the price file has {what} "
                                       f"({frame['Date'][row]!r}, {frame['Close'][row]!r}); fix or remove it")
        return pd.DataFrame({"Date": dates, "Close": closes})


class SyntheticSource:
    """Deterministic random-walk prices seeded by the symbol, for offline demos and benchmarks.

    Symbols starting with NOPE are unknown, so the error path can be shown offline too.
    """

    name = "synthetic"
    adjusted = False  # made-up prices with no corporate actions

    def __init__(self, latency_ms: int = 0) -> None:
        self.latency = latency_ms / 1000
        # Computing a year of prices (~0.1 ms) is cheaper than two trips to the cache; a simulated fetch is not.
        self.worth_caching = latency_ms > 0

    def history(self, symbol: str) -> PriceHistory:
        """Make up a year of closes for `symbol`, the same every time for the same symbol."""
        if self.latency:
            time.sleep(self.latency)  # stands in for a slow network fetch
        if symbol.startswith("NOPE"):
            raise UnknownSymbolError(f"{symbol}: the synthetic source treats symbols starting with NOPE as unknown")
        rng = np.random.default_rng(zlib.crc32(symbol.encode()))
        start_price = rng.uniform(20, 500)
        daily_returns = rng.normal(0.0004, 0.015, TRADING_DAYS_PER_YEAR)
        closes = start_price * np.exp(np.cumsum(daily_returns))
        return PriceHistory(symbol, _weekdays_up_to_yesterday(dt.date.today()), closes, self.name, self.adjusted)


@functools.lru_cache(maxsize=2)
def _weekdays_up_to_yesterday(today: dt.date) -> list[dt.date]:
    """List the synthetic source's dates, the same for every symbol: computed once a day, not per symbol."""
    last_weekday = np.busday_offset(np.datetime64(today, "D"), -1, roll="forward")
    dates = np.busday_offset(last_weekday, np.arange(-TRADING_DAYS_PER_YEAR + 1, 1), roll="forward")
    return [d.item() for d in dates]


# Read a symbol's cached prices (KEYS[1]) and count the lookup, and the miss if they are not there, in
# the cache's counters (KEYS[2]): one round trip, before any fetch (which may fail or be put back).
LOOKUP_SCRIPT = """
local found = redis.call('HMGET', KEYS[1], 'days', 'closes')
redis.call('HINCRBY', KEYS[2], 'lookups', 1)
if not (found[1] and found[2]) then redis.call('HINCRBY', KEYS[2], 'misses', 1) end
return found
"""
UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()  # numpy's day 0


class CachedSource:
    """A source behind a Redis cache of each symbol's year of closes for the day, shared by all workers.

    Stored compactly as raw numpy bytes (int32 day numbers, float64 closes), never pickled.
    """

    def __init__(self, source: PriceSource, connection: Redis, ttl: int, setting: str = "") -> None:
        """Cache `source`'s years, keyed by `setting`: the PRICE_SOURCE that built it (csv:DIR names its folder)."""
        self.source = source
        self.name = source.name
        self.setting = setting or source.name
        self.adjusted = source.adjusted
        self.worth_caching = False  # it is the cache
        self.connection = connection
        self.ttl = ttl
        self._lookup = connection.register_script(LOOKUP_SCRIPT)

    def history(self, symbol: str) -> PriceHistory:
        """Give `symbol`'s closes from today's cache, fetching and caching them on a miss.

        The cache only saves fetches: when it cannot be read or written (Redis unreachable, full,
        refusing), the prices are fetched and not cached (a fetched year is not thrown away for it).
        """
        key = records.prices_key(self.setting, symbol, records.trading_day())
        try:
            days, closes = self._lookup(keys=[key, records.PRICE_STATS_KEY])
        except RedisError as exc:
            log.warning("%s: the price cache could not be read (%s); fetching", symbol, exc)
            days = closes = None
        if days is not None and closes is not None:
            dates = (np.frombuffer(days, dtype=np.int32) - UNIX_EPOCH_ORDINAL).astype("datetime64[D]").tolist()
            return PriceHistory(symbol, dates, np.frombuffer(closes, dtype=np.float64).copy(), self.name, self.adjusted)
        history = self.source.history(symbol)  # errors are not cached: the next request asks again
        days = np.fromiter(map(dt.date.toordinal, history.dates), dtype=np.int32, count=len(history.dates))
        pipe = self.connection.pipeline(transaction=False)
        pipe.hset(key, mapping={"days": days.tobytes(), "closes": np.asarray(history.closes, dtype=np.float64).tobytes()})
        pipe.expire(key, self.ttl)
        try:
            pipe.execute()
        except RedisError as exc:
            log.warning("%s: the fetched prices could not be cached (%s)", symbol, exc)
        return history


def source_name(setting: str) -> str:
    """Name the source a PRICE_SOURCE setting gives (its results' `source`): yahoo, synthetic or csv."""
    return setting.split(":", 1)[0]


def price_source_from_config(config: type[Config]) -> YahooSource | CsvSource | SyntheticSource:
    """Build the source config.PRICE_SOURCE names: `yahoo` (behind its egress's governor), `synthetic` or `csv:DIR`."""
    setting = config.PRICE_SOURCE
    if setting == "yahoo":
        governor = Governor(connect(config.REDIS_URL, config.REDIS_SENTINEL_PASSWORD), config.YAHOO_EGRESS,
                            yahoo_rate_per_second(config.YAHOO_RATE), config.YAHOO_BURST, config.YAHOO_COOLDOWN,
                            config.BULK_QUEUE, config.JOB_TIMEOUT)
        session = yahoo_session(config.YAHOO_URL, config.YAHOO_SOURCE_ADDRESS, governor)
        budget = max(config.JOB_TIMEOUT - 2, 1)  # leave time to answer before RQ's timeout
        source = YahooSource(config.YFINANCE_CACHE_DIR, config.YAHOO_TIMEOUT, session=session, retries=config.YAHOO_RETRIES,
                             backoff=config.YAHOO_BACKOFF, budget=budget, governor=governor)
        source.warm_up()  # built once per host, before the workers fork (worker.py preload)
        return source
    if setting == "synthetic":
        return SyntheticSource(config.SYNTHETIC_LATENCY_MS)
    return CsvSource(setting.removeprefix("csv:"))  # config.check_settings allows no other form

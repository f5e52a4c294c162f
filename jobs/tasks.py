"""The RQ entry point: one job analyses one symbol and returns its result; it knows nothing of requests.

Arguments and results are plain JSON values because jobs are stored with RQ's JSONSerializer.
"""
import datetime as dt
import functools
from typing import Any

import numpy as np
from rq.timeouts import JobTimeoutException

from config import Config
from jobs.analysis import moving_average, next_trading_days
from jobs.connection import connect
from jobs.forecast import backtest, forecast, likely_range, rolling_lines
from jobs.records import DEFAULT_LEVEL
from jobs.sources import (
    CachedSource,
    PriceDataError,
    PriceHistory,
    PriceSource,
    RateLimitedError,
    SourceUnavailableError,
    UnknownSymbolError,
    price_source_from_config,
)

_price_source: PriceSource | None = None


def price_source() -> PriceSource:
    """Build the source PRICE_SOURCE names, behind the shared price cache, once per process (before the first job)."""
    global _price_source
    if _price_source is None:
        source = price_source_from_config(Config)
        if Config.PRICE_CACHE_TTL > 0 and source.worth_caching:
            source = CachedSource(source, connect(Config.REDIS_URL, Config.REDIS_SENTINEL_PASSWORD), Config.PRICE_CACHE_TTL,
                                  Config.PRICE_SOURCE)
        _price_source = source
    return _price_source


def analyze_symbol(symbol: str, window: int, horizon: int, method: str = "trend",
                   level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Run the RQ job: fetch a year of closes for `symbol` and return its result object.

    Raises PriceDataError (its message is for people) when the symbol's prices can't be had, so
    RQ records the job as failed; `failure_message` says what the person is told.
    """
    return analyze_history(price_source().history(symbol), window, horizon, method, level)


def failure_message(symbol: str, exc_type: type, timeout: int | None, exc_value: BaseException | None = None) -> str:
    """Tell a person in words why a symbol's job failed: never a traceback."""
    if issubclass(exc_type, PriceDataError):
        return str(exc_value)
    if issubclass(exc_type, JobTimeoutException):
        return f"{symbol}: fetching and analysing took longer than the job timeout ({timeout} s)"
    return f"{symbol}: the analysis failed unexpectedly ({exc_type.__name__}); the worker log has details"


def outcome_of(exc_type: type) -> str:
    """Name why a symbol's job failed, for /metrics (one of jobs.records.OUTCOMES)."""
    for kind, outcome in ((UnknownSymbolError, "unknown_symbol"), (RateLimitedError, "rate_limited"),
                          (SourceUnavailableError, "source_unavailable"), (PriceDataError, "no_data"),
                          (JobTimeoutException, "timeout")):
        if issubclass(exc_type, kind):
            return outcome
    return "error"


def analyze_history(history: PriceHistory, window: int, horizon: int, method: str = "trend",
                    level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Build the API's result object for one symbol's price history, with its forecast's track record."""
    closes = history.closes
    if len(closes) < max(window, 2):
        raise PriceDataError(
            f"{history.symbol}: only {len(closes)} daily closes, fewer than the {window}-day window needs"
        )
    predictions = forecast(closes, horizon, method)
    lines = rolling_lines(closes)  # the backtest's and the likely range's past lines, computed once
    record = backtest(closes, horizon, method, lines)
    lower, upper, coverage = likely_range(closes, horizon, level, lines) if record else (None, None, None)
    return {
        "symbol": history.symbol,
        "source": history.source,
        "adjusted": history.adjusted,
        "window": window,
        "horizon": horizon,
        "method": method,
        "dates": list(_iso_dates(tuple(history.dates))),
        "closes": _rounded(closes),
        "trend": _rounded(moving_average(closes, window)),
        "predictions": _rounded(predictions),
        "prediction_dates": [d.isoformat() for d in next_trading_days(history.dates[-1], horizon, Config.EXCHANGE_CALENDAR)],
        "prediction_lower": _rounded(lower) if record else None,
        "prediction_upper": _rounded(upper) if record else None,
        "interval": {"level": level, "coverage": None if coverage is None else round(coverage, 4)} if record else None,
        "backtest": {
            "origins": record["origins"],
            **{name: _rounded(record[name], 4) for name in ("mape", "mae", "naive_mape", "naive_mae")},
        } if record else None,
        "last_close": round(float(closes[-1]), 6),
    }


@functools.lru_cache(maxsize=16)
def _iso_dates(dates: tuple[dt.date, ...]) -> tuple[str, ...]:
    """Write dates as ISO text once per set of trading days: most symbols of a day share theirs (0.1 ms a symbol)."""
    return tuple(d.isoformat() for d in dates)


def _rounded(values: np.ndarray, decimals: int = 6) -> list[float]:
    """Six decimals: exact enough for any price, and a third of the JSON size of full floats.

    A non-finite value (a percentage error against a zero close) becomes null in the stored JSON.
    """
    return np.round(values, decimals).tolist()

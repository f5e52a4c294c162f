"""The RQ entry points: one job analyses one symbol; callbacks hand each outcome to the waiting request.

Arguments and results are plain JSON values because jobs are stored with RQ's JSONSerializer.
"""
import json

import numpy as np

from config import Config
from jobs import records
from jobs.analysis import moving_average, next_trading_days
from jobs.forecast import backtest, forecast, interval
from jobs.sources import CachedSource, PriceDataError, PriceHistory, price_source_from_config

_price_source = None


def price_source():
    """The source PRICE_SOURCE names behind the shared price cache, built once per process (before the first job)."""
    global _price_source
    if _price_source is None:
        from redis import Redis

        source = price_source_from_config(Config)
        if Config.PRICE_CACHE_TTL > 0:
            source = CachedSource(source, Redis.from_url(Config.REDIS_URL), Config.PRICE_CACHE_TTL)
        _price_source = source
    return _price_source


def analyze_symbol(symbol: str, window: int, horizon: int, method: str = "trend") -> dict:
    """The RQ job: {"ok": bool, "result": the symbol's result object as JSON text}.

    The result is encoded once, here: RQ stores it as a string (cheap to encode again) and the
    callback hands the same text to every waiting analysis.
    """
    result = symbol_result(symbol, window, horizon, method)
    return {"ok": "error" not in result, "result": json.dumps(result)}


def symbol_result(symbol: str, window: int, horizon: int, method: str) -> dict:
    """Fetch a year of closes for `symbol` and give its trend and forecast, or its error in words."""
    from rq import get_current_job
    from rq.timeouts import JobTimeoutException

    source = price_source()
    try:
        return analyze_history(source.history(symbol), window, horizon, method)
    except PriceDataError as exc:
        return {"symbol": symbol, "source": source.name, "error": str(exc)}
    except JobTimeoutException:  # answered here, so RQ does not run a hopelessly slow symbol again
        timeout = get_current_job().timeout
        return {"symbol": symbol, "source": source.name,
                "error": f"{symbol}: fetching and analysing took longer than the job timeout ({timeout} s)"}


def analyze_history(history: PriceHistory, window: int, horizon: int, method: str = "trend") -> dict:
    """The API's result object for one symbol's price history, with its forecast's track record."""
    closes = history.closes
    if len(closes) < max(window, 2):
        raise PriceDataError(
            f"{history.symbol}: only {len(closes)} daily closes, fewer than the {window}-day window needs"
        )
    predictions = forecast(closes, horizon, method)
    record = backtest(closes, horizon, method)
    lower, upper = interval(predictions, record) if record else (None, None)
    return {
        "symbol": history.symbol,
        "source": history.source,
        "window": window,
        "horizon": horizon,
        "method": method,
        "dates": [d.isoformat() for d in history.dates],
        "closes": _rounded(closes),
        "trend": _rounded(moving_average(closes, window)),
        "predictions": _rounded(predictions),
        "prediction_dates": [d.isoformat() for d in next_trading_days(history.dates[-1], horizon, Config.EXCHANGE_CALENDAR)],
        "prediction_lower": _rounded(lower) if record else None,
        "prediction_upper": _rounded(upper) if record else None,
        "backtest": {
            "origins": record["origins"],
            **{name: _rounded(record[name], 4) for name in ("mape", "mae", "naive_mape", "naive_mae")},
        } if record else None,
        "last_close": round(float(closes[-1]), 6),
    }


def _rounded(values: np.ndarray, decimals: int = 6) -> list[float]:
    """Six decimals: exact enough for any price, and a third of the JSON size of full floats."""
    return np.round(values, decimals).tolist()


def report_success(job, connection, outcome: dict, *args, **kwargs) -> None:
    """on_success callback: hand the result to every analysis waiting for this job."""
    records.publish(connection, job, job.args[0], outcome["result"], outcome["ok"], "finished")


def report_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """on_failure callback: an unexpected failure still answers, in words, without a traceback."""
    from rq.exceptions import AbandonedJobError

    if job.retries_left:  # RQ runs it again; only the last attempt answers
        return
    symbol = job.args[0]
    if issubclass(exc_type, AbandonedJobError):
        message = f"{symbol}: the worker running this analysis stopped before finishing it, on every attempt"
    else:
        message = f"{symbol}: the analysis failed unexpectedly ({exc_type.__name__}); the worker log has details"
    records.publish(connection, job, symbol, json.dumps({"symbol": symbol, "error": message}), False, "failed")

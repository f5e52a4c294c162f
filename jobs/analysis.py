"""The analysis math: numbers in, numbers out, no I/O, so it is cheap to test and reuse."""
import datetime as dt

import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression


def moving_average(closes: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average once the window is full: len(closes) - window + 1 values, oldest first."""
    if window < 1 or window > len(closes):
        raise ValueError(f"window {window} needs between 1 and {len(closes)} closes")
    sums = np.cumsum(np.concatenate(([0.0], closes)))
    return (sums[window:] - sums[:-window]) / window


def linear_forecast(closes: np.ndarray, horizon: int) -> np.ndarray:
    """Fit close ~ trading-day index over 0..n-1 and extrapolate to n..n+horizon-1 (the owner's method)."""
    n = len(closes)
    days = np.arange(n, dtype=float).reshape(-1, 1)
    future = np.arange(n, n + horizon, dtype=float).reshape(-1, 1)
    # Our closes are finite floats already (sources drop gaps): skipping the re-checks saves ~20 %.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        return LinearRegression().fit(days, closes).predict(future)


def next_trading_days(last_date: dt.date, horizon: int) -> list[dt.date]:
    """The `horizon` weekdays after `last_date`, the days the forecast speaks about."""
    first = np.busday_offset(np.datetime64(last_date, "D"), 1, roll="forward")
    days = np.busday_offset(first, np.arange(horizon), roll="forward")
    return [d.item() for d in days]

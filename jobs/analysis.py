"""The analysis math: numbers in, numbers out, no I/O, so it is cheap to test and reuse."""
import datetime as dt
import functools

import exchange_calendars
import numpy as np
import pandas as pd


def moving_average(closes: np.ndarray, window: int) -> np.ndarray:
    """Compute the simple moving average once the window is full: len(closes) - window + 1 values, oldest first.

    Each value is the plain mean of its own window: running sums would carry one huge close's
    rounding into every later window (a 1e16 close once made a later 77.872388 read 78.0).
    """
    if window < 1 or window > len(closes):
        raise ValueError(f"window {window} needs between 1 and {len(closes)} closes")
    return np.convolve(np.asarray(closes, dtype=float), np.ones(window), "valid") / window  # each window's own sum


def next_trading_days(last_date: dt.date, horizon: int, calendar: str = "XNYS") -> list[dt.date]:
    """List the exchange's `horizon` sessions after `last_date`: no weekends, no exchange holidays."""
    sessions = _sessions(calendar)
    after = sessions[sessions.searchsorted(np.datetime64(last_date, "D"), side="right"):][:horizon]
    days = [d.item() for d in after]
    if len(days) < horizon:  # past the calendar's published range: weekdays
        start = days[-1] if days else last_date
        days += [d.item() for d in np.busday_offset(np.datetime64(start, "D"), np.arange(1, horizon - len(days) + 1),
                                                    roll="forward")]
    return days


@functools.lru_cache(maxsize=4)
def _sessions(calendar: str) -> np.ndarray:
    """Every session of a maintained exchange calendar (exchange_calendars), as days."""
    return pd.DatetimeIndex(exchange_calendars.get_calendar(calendar).sessions).values.astype("datetime64[D]")

"""`make evaluate DATA=DIR`: how well each forecast method did on real daily prices, rolling origin by origin.

Every CSV in DIR is read through the CSV price source. At each origin (every trading day with a
year of closes behind it and 5 after it) each method sees only the last year (252 closes) and
predicts 1..5 days ahead; the table gives the mean absolute percentage error at day 1 and day 5
over all origins of all files.
"""
import os
import sys

import numpy as np

from jobs.forecast import error_table, predictions_at
from jobs.sources import CsvSource

YEAR, HORIZON = 252, 5
METHODS = [  # (label, method, fitting window)
    ("LinearRegression on a year of (trading-day index → close), extrapolated (`trend`, the default)", "trend", YEAR),
    ("LinearRegression on the last 20 days only", "trend", 20),
    ("LinearRegression slope over the year, through the last close (`anchored`)", "anchored", YEAR),
    ("naive: every future day = the last close", "naive", YEAR),
]


def evaluate(folder: str) -> str:
    """Tabulate each method's mean absolute percentage error at day 1 and day 5 over every CSV in `folder`."""
    source = CsvSource(folder)
    symbols = sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".csv"))
    actual, predicted, first, last = [], {label: [] for label, _, _ in METHODS}, None, None
    for symbol in symbols:
        history = source.full_history(symbol)
        closes = history.closes
        origins = np.arange(YEAR - 1, len(closes) - HORIZON)
        actual.append(closes[origins[:, None] + np.arange(1, HORIZON + 1)])
        for label, method, window in METHODS:
            predicted[label].append(predictions_at(closes, origins, HORIZON, method, window))
        first = min(first or history.dates[YEAR - 1], history.dates[YEAR - 1])
        last = max(last or history.dates[-1], history.dates[-1])
    actual = np.concatenate(actual)
    lines = [f"{len(symbols)} symbols ({', '.join(symbols)}), {len(actual):,} rolling origins from {first} to {last}; "
             "mean absolute percentage error:", "", "| method | day 1 | day 5 |", "|---|---|---|"]
    for label, _, _ in METHODS:
        mape = error_table(actual, np.concatenate(predicted[label]))["mape"]
        lines.append(f"| {label} | {mape[0]:.2f} % | {mape[HORIZON - 1]:.2f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        raise SystemExit("usage: make evaluate DATA=DIR   (a folder of SYMBOL.csv files with Date and Close)")
    print(evaluate(sys.argv[1]))

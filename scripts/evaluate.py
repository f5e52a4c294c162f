"""`make evaluate DATA=DIR`: how well each forecast method and its likely range did on real daily prices.

Every CSV in DIR is read through the CSV price source. At each origin (every trading day with a
year of closes behind it and 5 after it) each method sees only the last year (252 closes) and
predicts 1..5 days ahead; the first table gives the mean absolute percentage error at day 1 and
day 5 over all origins of all files. The second checks the likely range as a result computes it
(from the same 252 closes, nothing after the origin), at every 5th origin: the share of actual
closes inside it (coverage) and its width, per horizon day, at each level the page offers.
"""
import os
import sys

import numpy as np

from jobs.forecast import error_table, likely_range, predictions_at
from jobs.sources import CsvSource
from webapp.validation import PAGE_LEVELS

YEAR, HORIZON = 252, 5
RANGE_EVERY = 5  # every 5th origin for the ranges: each needs its own year's computation (~1 ms)
METHODS = [  # (label, method, fitting window)
    ("LinearRegression on a year of (trading-day index → close), extrapolated (`trend`, the API's default)", "trend", YEAR),
    ("LinearRegression on the last 20 days only", "trend", 20),
    ("LinearRegression slope over the year, through the last close (`anchored`, the page's default)", "anchored", YEAR),
    ("naive: every future day = the last close", "naive", YEAR),
]


def symbols_in(folder: str) -> list[str]:
    """List the symbols with a SYMBOL.csv file in `folder`, in order."""
    return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".csv"))


def evaluate(folder: str) -> str:
    """Tabulate each method's mean absolute percentage error at day 1 and day 5 over every CSV in `folder`."""
    source = CsvSource(folder)
    symbols = symbols_in(folder)
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
    errors = {label: error_table(actual, np.concatenate(predicted[label]))["mape"] for label, _, _ in METHODS}
    lines += [f"| {label} | {mape[0]:.2f} % | {mape[HORIZON - 1]:.2f} % |" for label, mape in errors.items()]
    return "\n".join([*lines, "", errors_in_words(errors)])


def errors_in_words(errors: dict[str, np.ndarray]) -> str:
    """One plain sentence under the error table: which method erred least, and by how much the default missed it."""
    best = min(errors, key=lambda label: errors[label][0])
    default = METHODS[0][0]
    said = (f"In words: on these prices the method that erred least one day ahead is \"{best.split(' (')[0]}\" "
            f"({errors[best][0]:.2f} %, {errors[best][HORIZON - 1]:.2f} % at day {HORIZON}).")
    if best != default:
        said += (f" The API's default, `trend`, erred {errors[default][0] / errors[best][0]:.1f}× as much one day ahead "
                 f"({errors[default][0]:.2f} %).")
    return said


def range_at(closes: np.ndarray, origin: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """Give the likely range a result computed at `origin` would show, the outcomes it was about, its in-year coverage.

    Only the year of closes up to the origin goes in: nothing after it.
    """
    lower, upper, coverage = likely_range(closes[origin - YEAR + 1:origin + 1], HORIZON, level)
    return lower, upper, closes[origin + 1:origin + 1 + HORIZON], coverage


def range_table(folder: str) -> str:
    """Tabulate the likely range's coverage and width per horizon day and level over every CSV in `folder`."""
    source = CsvSource(folder)
    inside, width, reported, origins = {lv: [] for lv in PAGE_LEVELS}, {lv: [] for lv in PAGE_LEVELS}, \
        {lv: [] for lv in PAGE_LEVELS}, 0
    forecast_inside = {"trend": [], "anchored": []}
    for symbol in symbols_in(folder):
        closes = source.full_history(symbol).closes
        for origin in range(YEAR - 1, len(closes) - HORIZON, RANGE_EVERY):
            origins += 1
            for level in PAGE_LEVELS:
                lower, upper, actual, coverage = range_at(closes, origin, level)
                inside[level].append((actual >= lower) & (actual <= upper))
                width[level].append((upper - lower) / closes[origin] * 100)
                reported[level].append(np.nan if coverage is None else coverage)
                if level == PAGE_LEVELS[0]:
                    for method, shares in forecast_inside.items():
                        year = closes[origin - YEAR + 1:origin + 1]
                        forecast = predictions_at(year, np.array([YEAR - 1]), HORIZON, method)[0]
                        shares.append((forecast >= lower) & (forecast <= upper))
    days = " | ".join(f"day {day}" for day in range(1, HORIZON + 1))
    lines = [f"Likely range, one for every method (`trend` and `anchored` alike), at {origins:,} origins (every "
             f"{RANGE_EVERY}th): the share of actual closes inside it, and its mean width in % of the last close:", "",
             f"| level | {days} | mean width, day 1 → {HORIZON} | in-year coverage the results reported (mean) |",
             "|---|" + "---|" * (HORIZON + 2)]
    for level in PAGE_LEVELS:
        coverage = np.mean(inside[level], axis=0) * 100
        mean_width = np.mean(width[level], axis=0)
        lines.append(f"| {level:.0%} | " + " | ".join(f"{c:.1f} %" for c in coverage) +
                     f" | {mean_width[0]:.1f} → {mean_width[-1]:.1f} % | {np.nanmean(reported[level]) * 100:.1f} % |")
    for method, shares in forecast_inside.items():
        share = np.mean(shares, axis=0) * 100
        lines += ["", f"The `{method}` forecast itself lies inside the {PAGE_LEVELS[0]:.0%} range at "
                  + ", ".join(f"{s:.0f} %" for s in share) + f" of origins (days 1 → {HORIZON})."]
    held = {level: np.mean(inside[level]) * 100 for level in PAGE_LEVELS}
    off = max(abs(held[level] - level * 100) for level in PAGE_LEVELS)
    verdict = "as promised, within 3 points" if off <= 3 else f"off by up to {off:.0f} points: not calibrated here"
    held_at = ", ".join(f"{held[level]:.0f} % of closes at {level * 100:.0f} %" for level in PAGE_LEVELS)
    lines += ["", f"In words: the likely ranges held {held_at} (days 1 → {HORIZON} together): {verdict}."]
    return "\n".join(lines)


def main(arguments: list[str]) -> None:
    """Print both tables for the folder named, or say in words why not."""
    if len(arguments) != 1:
        raise SystemExit("usage: make evaluate DATA=DIR   (a folder of SYMBOL.csv files with Date and Close)")
    folder = arguments[0]
    if not os.path.isdir(folder):
        raise SystemExit(f"make evaluate: there is no folder {folder!r}. Give DATA=DIR, a folder of SYMBOL.csv files "
                         "(Yahoo's export: Date and Close); the evaluation data is in ../shared/data/prices")
    if not symbols_in(folder):
        raise SystemExit(f"make evaluate: the folder {folder!r} has no SYMBOL.csv files")
    print(evaluate(folder), range_table(folder), sep="\n\n")


if __name__ == "__main__":
    main(sys.argv[1:])

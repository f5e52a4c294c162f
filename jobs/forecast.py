"""Forecasts and their track record: the methods, a rolling-origin backtest, calibrated likely ranges.

Numbers in, numbers out. The forecast shown to people is fitted with scikit-learn's
LinearRegression, as the owner specified; the backtest refits a line at every past origin, so
it uses the same least-squares line in closed form over cumulative sums, all origins at once
(tests check the two agree).
"""
import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression

MIN_TRAIN = 60  # closes a backtest origin needs behind it
VOL_WINDOW = MIN_TRAIN  # daily returns behind a day that measure its volatility
MIN_CALIBRATION = 30  # past scores a year's own origin needs before it is judged (in-year coverage)
JUDGED_PER_BLOCK = 4  # judged origins that share one range in the in-year coverage (a block spans 4 × horizon days)


def forecast(closes: np.ndarray, horizon: int, method: str = "trend") -> np.ndarray:
    """Prices for the next `horizon` trading days from a line fitted on (day index 0..n-1 → close).

    trend: the line evaluated at n..n+horizon-1 (the owner's method).
    anchored: the line's slope, starting from the last close.
    """
    n = len(closes)
    days = np.arange(n, dtype=float).reshape(-1, 1)
    # Our closes are finite floats already (sources drop gaps): skipping the re-checks saves ~20 %. Set for
    # the thread (the worker's only sklearn use), not per fit: a config_context cost 25 µs of a 400 µs fit.
    if not sklearn.get_config()["skip_parameter_validation"]:
        sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    model = LinearRegression().fit(days, closes)
    slope = model.coef_[0]
    if method == "anchored":
        return closes[-1] + slope * np.arange(1, horizon + 1)
    return model.intercept_ + slope * np.arange(n, n + horizon)  # the fitted line itself (predict() costs more)


def rolling_lines(closes: np.ndarray, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of the line through the closes ending at each day t.

    window=None fits on every close up to t (index 0..t); otherwise on the last `window` closes,
    indexed 0..window-1 (NaN before the window is full). Only closes up to t are used: no look-ahead.
    """
    n = len(closes)
    t = np.arange(n, dtype=float)
    sum_y = np.concatenate(([0.0], np.cumsum(closes)))
    sum_ty = np.concatenate(([0.0], np.cumsum(t * closes)))
    end = np.arange(1, n + 1)
    start = np.zeros(n, dtype=int) if window is None else end - window
    valid = start >= 0
    start = np.where(valid, start, 0)
    m = (end - start).astype(float)
    sy = sum_y[end] - sum_y[start]
    sty = sum_ty[end] - sum_ty[start] - start * sy  # Σ (t - start) y: days counted from the window's start
    sx = m * (m - 1) / 2
    sxx = (m - 1) * m * (2 * m - 1) / 6
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (m * sty - sx * sy) / (m * sxx - sx**2)
    intercept = (sy - slope * sx) / m
    slope[~valid | (m < 2)] = np.nan
    return slope, intercept


def predictions_at(closes: np.ndarray, origins: np.ndarray, horizon: int, method: str,
                   window: int | None = None, lines: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Predict as `method` would have at each origin, 1..horizon days ahead: shape (origins, horizon).

    `lines`: what rolling_lines(closes, window) gives, when the caller has it already.
    """
    t = origins[:, None]
    if method == "naive":
        return np.broadcast_to(closes[t], (len(origins), horizon)).astype(float)
    slope, intercept = lines or rolling_lines(closes, window)
    ahead = np.arange(1, horizon + 1)
    if method == "anchored":
        return closes[t] + slope[t] * ahead
    last_index = t if window is None else window - 1  # the origin's own position on its line
    return intercept[t] + slope[t] * (last_index + ahead)


def error_table(actual: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Mean absolute percentage error and mean absolute error per horizon day, over at least one origin."""
    absolute = np.abs(predicted - actual)
    count = len(absolute)  # sums over a count: np.mean's own overhead was a tenth of the backtest
    return {"mape": (absolute / np.abs(actual)).sum(axis=0) * (100 / count), "mae": absolute.sum(axis=0) / count}


def backtest(closes: np.ndarray, horizon: int, method: str,
             lines: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, int | np.ndarray] | None:
    """How `method` and the naive last-close forecast did on these closes, origin by origin.

    Origins are the days with at least MIN_TRAIN closes behind them and `horizon` after them;
    None if there are fewer than 5 such days. `lines`: rolling_lines(closes), if the caller has them.
    """
    origins = np.arange(MIN_TRAIN - 1, len(closes) - horizon)
    if len(origins) < 5:
        return None
    actual = closes[origins[:, None] + np.arange(1, horizon + 1)]
    predicted = predictions_at(closes, origins, horizon, method, lines=lines)
    ours, naive = error_table(actual, predicted), error_table(actual, predictions_at(closes, origins, horizon, "naive"))
    return {"origins": len(origins), "mape": ours["mape"], "mae": ours["mae"],
            "naive_mape": naive["mape"], "naive_mae": naive["mae"]}


def trailing_volatility(closes: np.ndarray, window: int = VOL_WINDOW) -> np.ndarray:
    """Give the standard deviation of the last `window` daily log returns ending at each day (fewer early on).

    Only returns up to each day count: no look-ahead. Floored above zero, so flat prices give a zero-width range.
    """
    returns = np.diff(np.log(closes))
    sums = np.concatenate(([0.0], np.cumsum(returns)))
    squares = np.concatenate(([0.0], np.cumsum(returns * returns)))
    day = np.arange(len(closes))
    start = np.maximum(day - window, 0)
    count = (day - start).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = ((squares[day] - squares[start]) - (sums[day] - sums[start]) ** 2 / count) / (count - 1)
    return np.sqrt(np.maximum(np.nan_to_num(variance), 1e-24))


def conformal_ranks(count: np.ndarray | int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Give the 0-based order statistics that bound a two-sided `level` range among `count` past scores.

    Split-conformal's finite-sample rule: with n scores, the ⌈(n + 1)(1 − α/2)⌉-th smallest bounds
    the next score from above with probability at least 1 − α/2 (α = 1 − level), if they are exchangeable.
    """
    count = np.asarray(count)
    tail = (1 - level) / 2
    exact = 1e-9  # (1 - 0.8) / 2 is 0.0999...98 in floating point: 100 of it must floor to 10, not 9
    low = np.maximum(np.floor((count + 1) * tail + exact).astype(int), 1) - 1
    high = np.minimum(np.ceil((count + 1) * (1 - tail) - exact).astype(int), count) - 1
    return low, high


def _scores(closes: np.ndarray, horizon: int,
            lines: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Give the year's origins, their errors in units of volatility, the path from the last day, and each day's volatility.

    An origin's errors are its outcomes' distances from its own slope-from-the-last-close path.
    """
    origins = np.arange(MIN_TRAIN - 1, len(closes) - horizon)
    centres = predictions_at(closes, np.append(origins, len(closes) - 1), horizon, "anchored", lines=lines)
    sigma = trailing_volatility(closes)
    outcomes = closes[origins[:, None] + np.arange(1, horizon + 1)]
    return origins, (outcomes / centres[:-1] - 1) / sigma[origins, None], centres[-1], sigma


def likely_range(closes: np.ndarray, horizon: int, level: float,
                 lines: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Give the range the next `horizon` closes are in with probability `level`, and how often such ranges held this year.

    The same range for every method. Centred on the fitted line's slope from the last close, spread by the year's own past errors
    around that path, each divided by the volatility of the 60 days before it and multiplied back
    by today's (so a calm spell does not narrow the range for a turbulent one), bounded by
    conformal ranks. Measured on 24 real price series (make evaluate), an 80 % range holds 80-81 %
    of outcomes on days 1-5. A range built on the trend method's own errors held 66 %: its line's
    offset from the last close says nothing of where the price goes, so the trend line may lie
    outside this range (docs/forecasts.md). `lines`: rolling_lines(closes), if the caller has them.
    """
    origins, scores, path, sigma = _scores(closes, horizon, lines)
    low, high = conformal_ranks(len(origins), level)
    ordered = np.sort(scores, axis=0)
    below, above = _around_the_path(ordered[low], ordered[high])
    lower, upper = path * (1 + below * sigma[-1]), path * (1 + above * sigma[-1])
    return lower, upper, _in_year_coverage(origins, scores, horizon, level)


def _around_the_path(low_score: np.ndarray, high_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widen conformal bounds to hold the path itself (score 0), so the forecast the page shows is never outside its range.

    Needed only when nearly all of a year's outcomes fell on one side of their paths (a price that kept
    accelerating); on 24 real series it never changed an 80 % range (0 of 21,696 origins, make evaluate's).
    """
    return np.minimum(low_score, 0.0), np.maximum(high_score, 0.0)


def _in_year_coverage(origins: np.ndarray, scores: np.ndarray, horizon: int, level: float) -> float | None:
    """Give the share of the year's outcomes inside ranges built, as likely_range does, from the errors known before each.

    Every `horizon`-th origin of the year, once 30 errors are known, is judged by a range built only
    from errors whose outcome was seen by the start of its block of JUDGED_PER_BLOCK judged origins
    (no look-ahead; a block shares one range); None if the year has too few.
    """
    judged = np.arange(MIN_CALIBRATION + horizon, len(origins), horizon)
    if not len(judged):
        return None
    cuts = judged[::JUDGED_PER_BLOCK]
    ahead = np.arange(1, horizon + 1)
    known = origins[None, :, None] + ahead <= origins[cuts][:, None, None]  # (blocks, origins, days): seen by the cut
    ordered = np.sort(np.where(known, scores[None], np.inf), axis=1)
    low, high = conformal_ranks(cuts[:, None] - ahead + 1, level)  # origins are consecutive: that many known
    lower, upper = _around_the_path(np.take_along_axis(ordered, low[:, None, :], axis=1)[:, 0],
                                    np.take_along_axis(ordered, high[:, None, :], axis=1)[:, 0])
    block = np.arange(len(judged)) // JUDGED_PER_BLOCK
    return float(((scores[judged] >= lower[block]) & (scores[judged] <= upper[block])).mean())

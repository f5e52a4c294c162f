"""Forecasts and their track record: the methods, a rolling-origin backtest, prediction intervals.

Numbers in, numbers out. The forecast shown to people is fitted with scikit-learn's
LinearRegression, as the owner specified; the backtest refits a line at every past origin, so
it uses the same least-squares line in closed form over cumulative sums, all origins at once
(tests check the two agree).
"""
import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression

MIN_TRAIN = 60  # closes a backtest origin needs behind it
INTERVAL_QUANTILES = (10, 90)  # percentiles of past percentage errors that bound a prediction


def forecast(closes: np.ndarray, horizon: int, method: str = "trend") -> np.ndarray:
    """Prices for the next `horizon` trading days from a line fitted on (day index 0..n-1 → close).

    trend: the line evaluated at n..n+horizon-1 (the owner's method).
    anchored: the line's slope, starting from the last close.
    """
    n = len(closes)
    days = np.arange(n, dtype=float).reshape(-1, 1)
    # Our closes are finite floats already (sources drop gaps): skipping the re-checks saves ~20 %.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
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
                   window: int | None = None) -> np.ndarray:
    """Predict as `method` would have at each origin, 1..horizon days ahead: shape (origins, horizon)."""
    slope, intercept = rolling_lines(closes, window)
    ahead = np.arange(1, horizon + 1)
    t = origins[:, None]
    if method == "naive":
        return np.broadcast_to(closes[t], (len(origins), horizon)).astype(float)
    if method == "anchored":
        return closes[t] + slope[t] * ahead
    last_index = t if window is None else window - 1  # the origin's own position on its line
    return intercept[t] + slope[t] * (last_index + ahead)


def error_table(actual: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Mean absolute percentage error and mean absolute error per horizon day."""
    absolute = np.abs(predicted - actual)
    return {"mape": (absolute / np.abs(actual)).mean(axis=0) * 100, "mae": absolute.mean(axis=0)}


def backtest(closes: np.ndarray, horizon: int, method: str) -> dict[str, int | np.ndarray] | None:
    """How `method` and the naive last-close forecast did on these closes, origin by origin.

    Origins are the days with at least MIN_TRAIN closes behind them and `horizon` after them;
    None if there are fewer than 5 such days.
    """
    origins = np.arange(MIN_TRAIN - 1, len(closes) - horizon)
    if len(origins) < 5:
        return None
    actual = closes[origins[:, None] + np.arange(1, horizon + 1)]
    predicted = predictions_at(closes, origins, horizon, method)
    ours, naive = error_table(actual, predicted), error_table(actual, predictions_at(closes, origins, horizon, "naive"))
    ratios = actual / predicted - 1
    low, high = np.percentile(ratios, INTERVAL_QUANTILES, axis=0)
    return {"origins": len(origins), "mape": ours["mape"], "mae": ours["mae"],
            "naive_mape": naive["mape"], "naive_mae": naive["mae"], "error_low": low, "error_high": high}


def interval(predictions: np.ndarray, record: dict[str, int | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bounds from the backtest's 10th/90th percentile errors, widened if need be to hold the prediction."""
    lower = predictions * (1 + np.minimum(record["error_low"], 0))
    upper = predictions * (1 + np.maximum(record["error_high"], 0))
    return lower, upper

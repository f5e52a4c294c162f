"""Forecast methods, the rolling-origin backtest and intervals, on data the tests make."""
import datetime as dt

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from jobs.analysis import next_trading_days
from jobs.forecast import MIN_TRAIN, backtest, forecast, interval, predictions_at, rolling_lines
from jobs.sources import PriceHistory
from jobs.tasks import analyze_history
from tests.conftest import random_walk


def test_the_trend_method_is_the_owners_linear_regression_unchanged():
    closes = random_walk(1)
    days = np.arange(len(closes)).reshape(-1, 1)
    expected = LinearRegression().fit(days, closes).predict(np.arange(252, 257).reshape(-1, 1))
    assert np.allclose(forecast(closes, 5, "trend"), expected)
    assert np.allclose(forecast(closes, 5), expected), "trend is the default"


def test_anchored_passes_through_the_last_close_with_the_fitted_slope():
    closes = random_walk(2)
    slope = LinearRegression().fit(np.arange(len(closes)).reshape(-1, 1), closes).coef_[0]
    predictions = forecast(closes, 5, "anchored")
    assert np.allclose(predictions, closes[-1] + slope * np.arange(1, 6))
    assert np.allclose(np.diff(np.concatenate(([closes[-1]], predictions))), slope)


@pytest.mark.parametrize("window", [None, 20, 60])
def test_the_vectorised_lines_equal_linear_regression_at_every_origin(window):
    closes = random_walk(3, 120)
    slope, intercept = rolling_lines(closes, window)
    for t in (30, 59, 119):
        start = 0 if window is None else t - window + 1
        if start < 0:
            assert np.isnan(slope[t]), "no line before the window is full"
            continue
        segment = closes[start:t + 1]
        model = LinearRegression().fit(np.arange(len(segment)).reshape(-1, 1), segment)
        assert slope[t] == pytest.approx(model.coef_[0]) and intercept[t] == pytest.approx(model.intercept_)


def test_the_backtest_uses_no_future_data():
    closes = random_walk(4)
    origins = np.arange(MIN_TRAIN - 1, 200)
    before = predictions_at(closes, origins, 5, "trend")
    changed = closes.copy()
    changed[201:] *= 3  # a wild future after the last origin
    assert np.array_equal(predictions_at(changed, origins, 5, "trend"), before)
    # and the backtest's own last predictions equal a fit on only the data up to that origin
    t = origins[-1]
    fit = LinearRegression().fit(np.arange(t + 1).reshape(-1, 1), closes[:t + 1])
    assert np.allclose(before[-1], fit.predict(np.arange(t + 1, t + 6).reshape(-1, 1)))


def test_the_backtest_reports_errors_per_horizon_day_for_the_method_and_naive():
    closes = random_walk(5)
    record = backtest(closes, 5, "anchored")
    assert record["origins"] == len(closes) - 5 - (MIN_TRAIN - 1)
    t = np.arange(MIN_TRAIN - 1, len(closes) - 5)
    naive_day1 = np.mean(np.abs(closes[t] - closes[t + 1]) / closes[t + 1]) * 100
    assert record["naive_mape"][0] == pytest.approx(naive_day1)
    assert len(record["mape"]) == len(record["mae"]) == 5


def test_interval_bounds_bracket_the_prediction_and_widen_with_the_horizon_on_random_walks():
    widths = []
    for seed in range(20):
        closes = random_walk(seed)
        for method in ("trend", "anchored"):
            predictions = forecast(closes, 5, method)
            lower, upper = interval(predictions, backtest(closes, 5, method))
            assert np.all(lower <= predictions) and np.all(predictions <= upper)
            if method == "anchored":
                widths.append((upper - lower) / predictions)
    mean_width = np.mean(widths, axis=0)
    assert np.all(np.diff(mean_width) > 0), mean_width


def test_a_result_carries_its_method_track_record_and_interval():
    closes = random_walk(6)
    days = [dt.date(2025, 1, 2) + dt.timedelta(days=i) for i in range(len(closes))]
    result = analyze_history(PriceHistory("TEST", days, closes, "synthetic", False), 20, 5, "anchored")
    assert result["method"] == "anchored"
    assert result["backtest"]["origins"] > 100 and len(result["backtest"]["naive_mape"]) == 5
    assert len(result["prediction_lower"]) == len(result["prediction_upper"]) == 5


def test_too_short_a_history_has_no_track_record_rather_than_a_made_up_one():
    closes = random_walk(7, 40)
    days = [dt.date(2025, 1, 2) + dt.timedelta(days=i) for i in range(40)]
    result = analyze_history(PriceHistory("NEW", days, closes, "csv", False), 20, 5)
    assert result["backtest"] is None and result["prediction_lower"] is None


def test_predicted_dates_skip_a_known_exchange_holiday():
    christmas_eve = dt.date(2025, 12, 24)
    assert next_trading_days(christmas_eve, 3) == [dt.date(2025, 12, 26), dt.date(2025, 12, 29), dt.date(2025, 12, 30)]
    good_friday_eve = dt.date(2026, 4, 2)  # NYSE is closed on Good Friday, 3 April 2026
    assert next_trading_days(good_friday_eve, 1) == [dt.date(2026, 4, 6)]

"""Forecast methods, the rolling-origin backtest and intervals, on data the tests make."""
import datetime as dt
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from jobs.analysis import next_trading_days
from jobs.forecast import (
    JUDGED_PER_BLOCK,
    MIN_CALIBRATION,
    MIN_TRAIN,
    VOL_WINDOW,
    backtest,
    conformal_ranks,
    forecast,
    likely_range,
    predictions_at,
    rolling_lines,
    trailing_volatility,
)
from jobs.sources import PriceHistory
from jobs.tasks import analyze_history
from scripts.evaluate import YEAR, range_at
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


def geometric_walk(seed: int, count: int, volatility: float) -> np.ndarray:
    """Closes whose daily log returns are independent, N(0, volatility²): the range's job is known exactly."""
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, volatility, count)))


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_the_likely_range_holds_its_level_on_random_walks_of_known_volatility(level):
    inside, widths = [], []
    for seed in range(4):
        closes = geometric_walk(seed, 2500, 0.02)
        for origin in range(YEAR - 1, len(closes) - 5, 7):
            lower, upper, actual, _ = range_at(closes, origin, level)
            inside.append((actual >= lower) & (actual <= upper))
            widths.append((upper - lower) / closes[origin])
    coverage = np.mean(inside, axis=0)
    assert np.all(np.abs(coverage - level) < 0.035), coverage
    # Known answer: a two-sided range of a normal log return with σ√h is 2·z·σ√h wide (z for the level).
    z = NormalDist().inv_cdf(0.5 + level / 2)
    expected = 2 * z * 0.02 * np.sqrt(np.arange(1, 6))
    assert np.all(np.abs(np.mean(widths, axis=0) / expected - 1) < 0.12), np.mean(widths, axis=0) / expected


def test_the_in_year_coverage_reported_matches_the_level_on_random_walks():
    reported = [likely_range(geometric_walk(seed, 252, 0.015), 5, 0.8)[2] for seed in range(60)]
    assert 0.75 < np.mean(reported) < 0.85
    assert likely_range(geometric_walk(0, 80, 0.015), 5, 0.8)[2] is None, "too short a year to judge"


def in_year_coverage_by_hand(closes: np.ndarray, horizon: int, level: float) -> float:
    """The in-year coverage written out origin by origin: each judged origin sees only the errors whose outcome had
    happened by the start of its block, so nothing after it can enter."""
    slope = rolling_lines(closes)[0]
    sigma = trailing_volatility(closes)
    origins = list(range(MIN_TRAIN - 1, len(closes) - horizon))

    def score(origin: int, day: int) -> float:
        return (closes[origin + day] / (closes[origin] + slope[origin] * day) - 1) / sigma[origin]

    judged = list(range(MIN_CALIBRATION + horizon, len(origins), horizon))
    inside = []
    for k, j in enumerate(judged):
        cut = origins[judged[k - k % JUDGED_PER_BLOCK]]
        for day in range(1, horizon + 1):
            known = sorted(score(origin, day) for origin in origins if origin + day <= cut)
            low, high = conformal_ranks(len(known), level)
            inside.append(min(known[int(low)], 0) <= score(origins[j], day) <= max(known[int(high)], 0))
    return float(np.mean(inside))


@pytest.mark.parametrize("seed", [1, 2])
def test_the_in_year_coverage_judges_each_origin_only_by_errors_seen_before_it(seed):
    closes = geometric_walk(seed, 252, 0.02)
    for level in (0.8, 0.9):
        assert likely_range(closes, 5, level)[2] == pytest.approx(in_year_coverage_by_hand(closes, 5, level))


def test_no_range_uses_a_close_after_its_origin():
    closes = geometric_walk(9, 400, 0.02)
    tampered = closes.copy()
    tampered[300:] = tampered[300:] * 3 + 50  # everything after origin 299 changes
    for level in (0.8, 0.9):
        before, after = range_at(closes, 299, level), range_at(tampered, 299, level)
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[3] == after[3]
    volatility = trailing_volatility(closes)
    assert np.array_equal(volatility[:300], trailing_volatility(tampered)[:300])


def test_trailing_volatility_is_the_rolling_standard_deviation_of_log_returns():
    closes = geometric_walk(3, 300, 0.02)
    expected = pd.Series(np.log(closes)).diff().rolling(VOL_WINDOW).std().to_numpy()
    assert np.allclose(trailing_volatility(closes)[VOL_WINDOW:], expected[VOL_WINDOW:])


def test_conformal_ranks_are_the_finite_sample_order_statistics():
    assert [tuple(map(int, conformal_ranks(n, 0.8))) for n in (9, 99, 188)] == [(0, 8), (9, 89), (17, 170)]
    assert tuple(map(int, conformal_ranks(99, 0.9))) == (4, 94)


def test_flat_prices_give_a_range_of_no_width_not_a_broken_one():
    lower, upper, _ = likely_range(np.full(252, 50.0), 5, 0.8)
    assert np.allclose(lower, 50.0) and np.allclose(upper, 50.0)


def accelerating(count: int, rate: float) -> np.ndarray:
    """Closes whose growth keeps speeding up (or slowing down): nearly every outcome lies on one side of its path."""
    return 50 * np.exp(rate * np.arange(count) ** 2)


@pytest.mark.parametrize("closes", [accelerating(252, 4e-5), accelerating(252, -4e-6), geometric_walk(3, 252, 0.02)],
                         ids=["accelerating", "decelerating", "random walk"])
@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_the_likely_range_always_holds_the_anchored_forecast_the_page_leads_with(closes, level):
    lower, upper, _ = likely_range(closes, 5, level)
    anchored = forecast(closes, 5, "anchored")
    assert np.all(lower <= anchored + 1e-9) and np.all(anchored <= upper + 1e-9), (lower, anchored, upper)


def test_a_result_carries_its_method_track_record_and_interval():
    closes = random_walk(6)
    days = [dt.date(2025, 1, 2) + dt.timedelta(days=i) for i in range(len(closes))]
    result = analyze_history(PriceHistory("TEST", days, closes, "synthetic", False), 20, 5, "anchored")
    assert result["method"] == "anchored"
    assert result["backtest"]["origins"] > 100 and len(result["backtest"]["naive_mape"]) == 5
    assert len(result["prediction_lower"]) == len(result["prediction_upper"]) == 5
    assert result["interval"]["level"] == 0.8 and 0.5 < result["interval"]["coverage"] <= 1
    wider = analyze_history(PriceHistory("TEST", days, closes, "synthetic", False), 20, 5, "anchored", level=0.9)
    assert np.all(np.subtract(wider["prediction_upper"], wider["prediction_lower"]) >
                  np.subtract(result["prediction_upper"], result["prediction_lower"]))
    assert wider["interval"]["level"] == 0.9


def test_too_short_a_history_has_no_track_record_rather_than_a_made_up_one():
    closes = random_walk(7, 40)
    days = [dt.date(2025, 1, 2) + dt.timedelta(days=i) for i in range(40)]
    result = analyze_history(PriceHistory("NEW", days, closes, "csv", False), 20, 5)
    assert result["backtest"] is None and result["prediction_lower"] is None and result["interval"] is None


def test_predicted_dates_skip_a_known_exchange_holiday():
    christmas_eve = dt.date(2025, 12, 24)
    assert next_trading_days(christmas_eve, 3) == [dt.date(2025, 12, 26), dt.date(2025, 12, 29), dt.date(2025, 12, 30)]
    good_friday_eve = dt.date(2026, 4, 2)  # NYSE is closed on Good Friday, 3 April 2026
    assert next_trading_days(good_friday_eve, 1) == [dt.date(2026, 4, 6)]

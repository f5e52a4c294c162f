"""The math, checked against independent pandas/numpy computations."""
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.analysis import moving_average, next_trading_days
from jobs.forecast import forecast
from jobs.sources import PriceHistory
from jobs.tasks import analyze_history


@pytest.fixture
def closes():
    rng = np.random.default_rng(7)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 252)))


@pytest.mark.parametrize("window", [1, 5, 20, 252])
def test_moving_average_matches_pandas_rolling_mean(closes, window):
    expected = pd.Series(closes).rolling(window).mean().dropna().to_numpy()
    assert np.allclose(moving_average(closes, window), expected, rtol=1e-10)


@pytest.mark.parametrize("huge", [1e12, 1e16, 1e300])
@pytest.mark.parametrize("window", [1, 20, 250])
def test_each_moving_average_is_the_plain_mean_of_its_window_whatever_came_before(huge, window):
    """One huge close early in the year leaves every later window's mean exact (cumulative sums lost digits)."""
    closes = np.linspace(70, 90, 252) + np.sin(np.arange(252))  # 77.872388-like prices
    closes[3] = huge
    averages = moving_average(closes, window)
    plain = np.array([np.mean(closes[start:start + window]) for start in range(len(closes) - window + 1)])
    assert np.allclose(averages, plain, rtol=1e-9, atol=0)


def test_moving_average_refuses_a_window_longer_than_the_data(closes):
    with pytest.raises(ValueError):
        moving_average(closes[:10], 11)


@pytest.mark.parametrize("horizon", [1, 5, 30])
def test_trend_forecast_matches_a_least_squares_line(closes, horizon):
    slope, intercept = np.polyfit(np.arange(len(closes)), closes, 1)
    expected = intercept + slope * np.arange(len(closes), len(closes) + horizon)
    assert np.allclose(forecast(closes, horizon), expected, rtol=1e-9)


def test_trend_forecast_continues_an_exact_line():
    assert np.allclose(forecast(np.array([1.0, 3.0, 5.0, 7.0]), 2), [9.0, 11.0])


def test_next_trading_days_skip_the_weekend():
    friday = dt.date(2026, 11, 20)
    assert next_trading_days(friday, 3) == [dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25)]


def test_analyze_history_gives_the_contract_fields(closes):
    days = [d.date() for d in pd.bdate_range("2025-01-01", periods=len(closes))]
    result = analyze_history(PriceHistory("TEST", days, closes, "csv", False), window=20, horizon=5)
    assert result["symbol"] == "TEST" and result["source"] == "csv"
    assert len(result["trend"]) == len(closes) - 19
    assert result["trend"][-1] == pytest.approx(closes[-20:].mean(), abs=1e-6)
    assert len(result["predictions"]) == len(result["prediction_dates"]) == 5
    assert result["prediction_dates"][0] > result["dates"][-1]
    assert result["last_close"] == pytest.approx(closes[-1], abs=1e-6)

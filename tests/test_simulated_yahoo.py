"""The simulated Yahoo: yfinance's real request and parsing path against it, its rate limit and its delays."""
import json
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import requests

from config import ROOT
from jobs.sources import SyntheticSource, UnknownSymbolError, YahooSource
from jobs.yahoo_transport import yahoo_session
from scripts import simulated_yahoo
from scripts.simulated_yahoo import Client, latency, parse_rate
from tests.conftest import wait_until


@pytest.fixture
def sim():
    with simulated_yahoo.start(latency_ms=0) as server:
        yield server


def get(session: requests.Session, url: str) -> int:
    with session.get(url, timeout=5) as response:
        return response.status_code


def test_yfinance_reads_synthetic_prices_through_the_simulator(sim, tmp_path):
    with yahoo_session(sim.url) as session:
        source = YahooSource(cache_dir=str(tmp_path / "yf"), session=session, retries=0)
        history = source.history("AAPL")
        with pytest.raises(UnknownSymbolError, match="NOPE1"):
            source.history("NOPE1")
    expected = SyntheticSource().history("AAPL")
    assert len(history.closes) == 252
    np.testing.assert_allclose(history.closes, expected.closes, rtol=0, atol=1e-6)
    assert history.dates == expected.dates
    kinds = sim.stats()["addresses"]["127.0.0.1"]["kinds"]
    assert kinds["chart"] >= 2 and kinds["crumb"] >= 1


def test_an_unknown_symbol_costs_one_call_to_yahoo(sim, tmp_path):
    with yahoo_session(sim.url) as session:
        source = YahooSource(cache_dir=str(tmp_path / "yf"), session=session, retries=2)
        source.history("AAPL")  # cookie and crumb in hand
        before = sim.stats()["addresses"]["127.0.0.1"]["requests"]
        with pytest.raises(UnknownSymbolError, match="NOPE3: Yahoo Finance has no such symbol"):
            source.history("NOPE3")
        after = sim.stats()["addresses"]["127.0.0.1"]
    assert after["requests"] - before == 1, "no second cookie strategy, no second chart call, no retry"
    assert after["statuses"]["404"] == 1


def test_yahoo_answers_by_path(sim):
    with requests.Session() as session:
        with session.get(f"{sim.url}/v1/test/getcrumb", timeout=5) as response:
            assert response.status_code == 200 and response.text
            crumb = response.text
        with session.get(f"{sim.url}/v8/finance/chart/MSFT?range=1d&interval=1d&crumb={crumb}", timeout=5) as response:
            result = response.json()["chart"]["result"][0]
        assert len(result["timestamp"]) == 1
        assert result["indicators"]["quote"][0]["close"] == [float(SyntheticSource().history("MSFT").closes[-1])]
        with session.get(f"{sim.url}/v8/finance/chart/NOPE2?crumb={crumb}", timeout=5) as response:
            assert response.status_code == 404 and response.json()["chart"]["error"]["code"] == "Not Found"
        with session.get(f"{sim.url}/v8/finance/chart/MSFT?crumb=Too+Many+Requests", timeout=5) as response:
            assert response.status_code == 401, "a chart call needs the crumb Yahoo gave"
        with session.get(f"{sim.url}/v10/finance/quoteSummary/MSFT", timeout=5) as response:
            assert response.status_code == 404
        with session.get(f"{sim.url}/", timeout=5) as response:
            assert response.status_code == 200 and response.text == "" and "Set-Cookie" in response.headers
    kinds = sim.stats()["addresses"]["127.0.0.1"]["kinds"]
    assert kinds == {"chart": 3, "crumb": 1, "other": 1, "cookie": 1}


def test_an_address_over_budget_gets_429_and_a_ban_while_another_keeps_its_own_budget():
    rate = 1.0
    with simulated_yahoo.start(rate=rate, burst=3, ban=0.5, latency_ms=0) as sim, \
            yahoo_session(sim.url) as first, yahoo_session(sim.url, source_address="127.0.0.2") as second:
        url = f"{sim.url}/v1/test/getcrumb"
        assert [get(first, url) for _ in range(4)] == [200, 200, 200, 429]
        with first.get(url, timeout=5) as response:
            assert response.status_code == 429 and response.text == "Too Many Requests"
        ban = sim.stats()["addresses"]["127.0.0.1"]
        assert ban["banned_until"] == pytest.approx(ban["rate_limited_at"][0] + 0.5)
        assert [get(second, url) for _ in range(3)] == [200, 200, 200]  # not touched by the first one's ban
        assert get(first, url) == 429  # still banned, and the ban is not extended by this request
        assert sim.stats()["addresses"]["127.0.0.1"]["banned_until"] == ban["banned_until"]
        # The bucket starts empty when the ban ends; asking before a token has refilled would ban again.
        refilled = ban["banned_until"] + 1 / rate
        wait_until(lambda: sim.stats()["now"] >= refilled, timeout=10, what="a token to refill after the ban")
        assert get(first, url) == 200
        stats = sim.stats()["addresses"]
    first_stats, second_stats = stats["127.0.0.1"], stats["127.0.0.2"]
    assert first_stats["statuses"] == {"200": 4, "429": 3} and first_stats["banned_until"] is None
    assert len(first_stats["rate_limited_at"]) == 3 and first_stats["kinds"] == {"crumb": 7}
    assert second_stats["requests"] == 3 and second_stats["statuses"] == {"200": 3}
    assert second_stats["rate_limited_at"] == [] and second_stats["banned_until"] is None


def test_the_token_bucket_refills_at_the_rate_after_a_ban():
    client = Client(tokens=2.0, updated=0.0, first_at=0.0)
    assert [client.admit(0.0, 1.0, 2, 10.0) for _ in range(3)] == [True, True, False]
    assert client.banned_until == 10.0
    assert not client.admit(9.9, 1.0, 2, 10.0) and client.banned_until == 10.0
    assert not client.admit(10.5, 1.0, 2, 10.0)  # the bucket starts empty when the ban ends: half a token
    assert client.banned_until == 20.5
    assert client.admit(21.5, 1.0, 2, 10.0) and not client.admit(21.5, 1.0, 2, 10.0)
    assert Client(0.0, 0.0, 0.0).admit(0.0, None, 0, 10.0)  # no rate: no limit


def test_stats_and_reset_over_http_are_never_limited():
    with simulated_yahoo.start(rate=0.1, burst=1, ban=60, latency_ms=0) as sim, requests.Session() as session:
        assert [get(session, f"{sim.url}/") for _ in range(2)] == [200, 429]
        for _ in range(3):
            with session.get(f"{sim.url}/__simulator/stats", timeout=5) as response:
                assert response.json()["addresses"]["127.0.0.1"]["statuses"] == {"200": 1, "429": 1}
        with session.post(f"{sim.url}/__simulator/reset", timeout=5) as response:
            assert response.status_code == 200
        assert sim.stats()["addresses"] == {}
        assert get(session, f"{sim.url}/") == 200


def test_latency_draws_are_log_normal_around_the_median_and_capped():
    rng = random.Random(13)
    draws = [latency(rng, 150, 0.5) for _ in range(2000)]
    assert 0.135 < statistics.median(draws) < 0.165
    assert max(draws) <= 1.5 and min(draws) > 0
    assert latency(rng, 100, 5.0) <= 1.0  # capped at 10x the median
    assert latency(rng, 0, 0.5) == 0.0


def test_answers_are_delayed():
    with simulated_yahoo.start(latency_ms=40, sigma=0.3, seed=1) as sim, requests.Session() as session:
        durations = []
        for _ in range(20):
            started = time.monotonic()
            get(session, f"{sim.url}/v1/test/getcrumb")
            durations.append(time.monotonic() - started)
    assert 0.02 <= statistics.median(durations) <= 0.12


def test_a_stopped_simulator_refuses_connections():
    sim = simulated_yahoo.start(latency_ms=0)
    with requests.Session() as session:
        assert get(session, f"{sim.url}/") == 200  # leaves a kept-alive connection
        sim.stop()
        with pytest.raises(requests.ConnectionError):
            get(session, f"{sim.url}/")


def test_rates_are_read_as_limits_writes_them():
    assert parse_rate("60/minute") == 1.0
    assert parse_rate("2/second") == 2.0
    assert parse_rate("none") is None and parse_rate("0") is None


def test_the_command_line_serves_until_sigterm():
    command = [sys.executable, "-m", "scripts.simulated_yahoo", "--port", "0", "--rate", "60/minute", "--latency-ms", "0"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            url = line.split()[-1]
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(f"{url}/__simulator/stats", timeout=5) as response:
                assert json.load(response)["addresses"] == {}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()

"""Settings: the defaults work together, and settings that cannot are refused at start-up, saying which and why."""
import datetime as dt
import os
import subprocess
import sys

import pytest

from config import Config, check_settings
from jobs.records import trading_day
from tests.conftest import ROOT
from webapp import create_app
from webapp.shared_jobs import work_ids
from webapp.validation import TrendsRequest


def settings(**changes) -> dict:
    return {**{name: value for name, value in vars(Config).items() if name.isupper()}, **changes}


def test_the_defaults_work_together():
    check_settings(settings())


@pytest.mark.parametrize("changes, named", [
    ({"TRENDS_TIMEOUT": 40}, "TRENDS_TIMEOUT (40) must be at least 2 × JOB_TIMEOUT + WORKER_LOST_AFTER + "
                             "MAINTENANCE_INTERVAL (41)"),
    ({"JOB_TIMEOUT": 20}, "MAINTENANCE_INTERVAL (51)"),
    ({"RESULT_CACHE_TTL": 600}, "RESULT_CACHE_TTL (600) must be less than RESULT_TTL (600)"),
    ({"WORKER_LOST_AFTER": 1}, "WORKER_LOST_AFTER must be at least 3, got 1"),
    ({"MAINTENANCE_INTERVAL": 0}, "MAINTENANCE_INTERVAL must be at least 1, got 0"),
])
def test_settings_that_cannot_work_together_are_refused_by_name(changes, named):
    with pytest.raises(ValueError, match="settings that cannot work together") as refused:
        check_settings(settings(**changes))
    assert named in str(refused.value)


def test_the_web_app_refuses_them_at_start_up():
    with pytest.raises(ValueError, match="TRENDS_TIMEOUT"):
        create_app({"TRENDS_TIMEOUT": 10})


def test_a_worker_host_refuses_them_at_start_up():
    env = dict(os.environ, TRENDS_TIMEOUT="10", REDIS_URL="redis://127.0.0.1:1/0")
    run = subprocess.run([sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "TRENDS_TIMEOUT (10) must be at least" in run.stderr


def test_job_ids_and_the_price_cache_share_one_day_the_utc_date():
    assert trading_day() == dt.datetime.now(dt.timezone.utc).date().isoformat()
    request = TrendsRequest(symbols=["AAPL"])
    assert work_ids(request, trading_day()) != work_ids(request, "2000-01-01"), "the day names the shared work"

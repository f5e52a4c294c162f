"""Settings: the defaults work together, and settings that cannot are refused at start-up, saying which and why."""
import datetime as dt
import os
import subprocess
import sys

import pytest

from config import REFUSED, Config, SettingsError, check_settings, settings_of
from jobs.records import trading_day
from scripts.procfile import commands
from tests.conftest import ROOT
from webapp import create_app
from webapp.shared_jobs import work_ids
from webapp.validation import TrendsRequest


def settings(**changes) -> dict:
    return {**settings_of(Config), **changes}


def test_the_defaults_work_together():
    check_settings(settings())


@pytest.mark.parametrize("changes, named", [
    ({"TRENDS_TIMEOUT": 40}, "TRENDS_TIMEOUT (40) must be at least 2 × JOB_TIMEOUT + WORKER_LOST_AFTER + "
                             "MAINTENANCE_INTERVAL (41)"),
    ({"JOB_TIMEOUT": 20}, "MAINTENANCE_INTERVAL (51)"),
    ({"RESULT_CACHE_TTL": 600}, "RESULT_CACHE_TTL (600) must be less than RESULT_TTL (600)"),
    ({"WORKER_LOST_AFTER": 1}, "WORKER_LOST_AFTER must be between 3 and 3600, got 1"),
    ({"MAINTENANCE_INTERVAL": 0}, "MAINTENANCE_INTERVAL must be between 1 and 3600, got 0"),
    ({"PORT": 70000}, "PORT must be between 1 and 65535, got 70000"),
    ({"WORKER_NICE": 20}, "WORKER_NICE must be between 0 and 19, got 20"),
    ({"YAHOO_BACKOFF": -1.0}, "YAHOO_BACKOFF must be between 0 and 60, got -1.0"),
    ({"MAX_CONTENT_LENGTH": 10}, "MAX_CONTENT_LENGTH must be between 1024 and 1e+08, got 10"),
    ({"PRICE_SOURCE": "yaho"}, "PRICE_SOURCE must be yahoo, synthetic or csv:DIR, got 'yaho'"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, WARN, ERROR, CRITICAL, got 'LOUD'"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel://"),
    ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL: a redis+sentinel:// URL names its sentinels and service"),
    ({"REDIS_MAXMEMORY": "lots"}, "REDIS_MAXMEMORY must be a size such as 512mb or 1gb, got 'lots'"),
    ({"RATE_LIMIT_POLL": "often"}, "RATE_LIMIT_POLL must be a rate such as 600/minute, got 'often'"),
    ({"BULK_QUEUE": "trends"}, "INTERACTIVE_QUEUE and BULK_QUEUE must differ"),
    ({"REDIS_TLS_CERT": "/c.pem"}, "REDIS_TLS_CERT, REDIS_TLS_KEY and REDIS_TLS_CA go together"),
    ({"REDIS_BIND": "0.0.0.0", "REDIS_REQUIREPASS": ""}, "REDIS_BIND (0.0.0.0) is not loopback: set REDIS_REQUIREPASS"),
    ({"PRICE_SOURCE": "csv:/no/such/folder"}, "PRICE_SOURCE names a folder that does not exist: '/no/such/folder'"),
    ({"YAHOO_RATE": "fast"}, "YAHOO_RATE must be a rate such as 600/minute, got 'fast'"),
    ({"YAHOO_BURST": 0}, "YAHOO_BURST must be between 1 and 100000, got 0"),
    ({"YAHOO_COOLDOWN": 0}, "YAHOO_COOLDOWN must be between 1 and 3600, got 0"),
    ({"YAHOO_EGRESS": "nat:1"}, "YAHOO_EGRESS must be 1-100 letters, digits, '.', '_' or '-', got 'nat:1'"),
    ({"YAHOO_URL": "ftp://x"}, "YAHOO_URL must start with http:// or https://, got 'ftp://x'"),
    ({"YAHOO_SOURCE_ADDRESS": "eth0"}, "YAHOO_SOURCE_ADDRESS must be an IP address of this host, got 'eth0'"),
])
def test_settings_that_cannot_work_are_refused_by_name(changes, named):
    with pytest.raises(SettingsError, match="settings that cannot work: ") as refused:
        check_settings(settings(**changes))
    assert named in str(refused.value)


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.1 -::1", "localhost"])
def test_a_loopback_bind_needs_no_password(bind):
    check_settings(settings(REDIS_BIND=bind, REDIS_REQUIREPASS=""))


def test_the_web_app_refuses_them_at_start_up():
    with pytest.raises(SettingsError, match="TRENDS_TIMEOUT"):
        create_app({"TRENDS_TIMEOUT": 10})


@pytest.mark.parametrize("process, settings, said", [
    ("worker", {"TRENDS_TIMEOUT": "10"}, "TRENDS_TIMEOUT (10) must be at least"),
    ("redis", {"TRENDS_TIMEOUT": "10"}, "TRENDS_TIMEOUT (10) must be at least"),
    ("web", {"TRENDS_TIMEOUT": "10"}, "TRENDS_TIMEOUT (10) must be at least"),
    ("worker", {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
    ("worker", {"EXCHANGE_CALENDAR": "MOON"}, "EXCHANGE_CALENDAR must be an exchange_calendars name"),
    ("worker", {"MAX_BODY_BYTES": "5000"}, "MAX_BODY_BYTES was renamed MAX_CONTENT_LENGTH"),
])
def test_every_process_refuses_bad_settings_at_start_up_in_words(process, settings, said):
    env = dict(os.environ, REDIS_URL="redis://127.0.0.1:1/0", PRICE_SOURCE="synthetic", **settings)
    run = subprocess.run(commands()[process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == REFUSED, "a status systemd's unit does not restart on"
    assert said in run.stderr
    assert "Traceback" not in run.stderr


def test_the_servers_password_is_the_one_the_clients_send():
    """A password in REDIS_URL is percent-encoded; Redis must be asked to require the decoded one, as redis-py sends it."""
    run = subprocess.run([sys.executable, "-c", "from config import Config; print(Config.REDIS_REQUIREPASS)"], cwd=ROOT,
                         env=dict(os.environ, REDIS_URL="redis://:p%40ss%2Fw0rd@127.0.0.1:6379/0"),
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "p@ss/w0rd"


@pytest.mark.parametrize("name, raw, said", [
    ("PORT", "eighty", "setting PORT must be an integer, got 'eighty'"),
    ("YAHOO_BACKOFF", "slow", "setting YAHOO_BACKOFF must be a number, got 'slow'"),
    ("DASHBOARD_READ_ONLY", "maybe", "setting DASHBOARD_READ_ONLY must be one of 1, true"),
])
def test_a_setting_that_is_not_a_value_of_its_kind_stops_the_process_by_name(name, raw, said):
    run = subprocess.run([sys.executable, "-c", "import config"], cwd=ROOT, env=dict(os.environ, **{name: raw}),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == REFUSED, "a status systemd's unit does not restart on"
    assert said in run.stderr


def test_job_ids_and_the_price_cache_share_one_day_the_utc_date():
    assert trading_day() == dt.datetime.now(dt.timezone.utc).date().isoformat()
    request = TrendsRequest(symbols=["AAPL"])
    assert work_ids(request, trading_day(), "yahoo") != work_ids(request, "2000-01-01", "yahoo"), "the day names the work"

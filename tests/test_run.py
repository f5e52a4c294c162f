"""`make run` (scripts/run.py) keeps the whole system up: its Redis killed with SIGKILL comes back, nothing queued is lost."""
import os
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError

from tests.conftest import ROOT, free_port, http_json, http_status, wait_until


@pytest.fixture
def make_run(tmp_path):
    """scripts/run.py as `make demo` runs it, on free ports, with its own Redis data folder."""
    redis_port, web_port = free_port(), free_port()
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", REDIS_DATA_DIR=str(tmp_path / "redis"),
               PORT=str(web_port), PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS="300", WORKERS="2",
               YFINANCE_CACHE_DIR=str(tmp_path / "yf"))
    log = open(tmp_path / "run.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "scripts.run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: http_status(url + "/healthz") == 200, timeout=60, what="make run to serve with live workers")
        password = (tmp_path / "redis" / "password").read_text()
        yield process, url, env["REDIS_URL"].replace("redis://", f"redis://:{password}@")
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C would
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _redis_pid(redis_url: str) -> int:
    """The process id of the Redis server make run started, as the server itself reports it."""
    return Redis.from_url(redis_url).info("server")["process_id"]


def _succeeds(url: str) -> bool:
    try:
        return http_json("POST", url + "/get_trends", {"symbols": ["AFTER"]}, timeout=40)["status"] == "success"
    except OSError:  # 503 while Redis is down, or a refused connection
        return False


def test_make_run_gives_its_redis_a_password_only_its_owner_can_read(make_run, tmp_path):
    _, url, redis_url = make_run
    password_file = tmp_path / "redis" / "password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AuthenticationError):  # no password: refused
        Redis.from_url(redis_url.replace(f":{password_file.read_text()}@", "")).get("rq:queues")
    assert Redis.from_url(redis_url).ping()
    assert http_json("POST", url + "/get_trends", {"symbols": ["AAPL"]})["status"] == "success", "web app and workers have it"


def test_redis_killed_under_make_run_comes_back_and_loses_no_queued_job(make_run):
    run, url, redis_url = make_run
    symbols = [f"Q{i}" for i in range(30)]  # 30 × 300 ms on 2 workers: still queued when Redis dies
    status_url = url + http_json("POST", url + "/api/analyses", {"symbols": symbols})["status_url"]
    time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    assert http_json("GET", status_url)["done"] < len(symbols), "jobs were still queued at the kill"
    os.kill(_redis_pid(redis_url), signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: _succeeds(url), timeout=30, what="a new request to succeed after Redis was killed")
    remaining = 30 - (time.monotonic() - killed_at)
    wait_until(lambda: http_json("GET", status_url)["state"] == "finished", timeout=max(remaining, 0.1),
               what="every job queued before the kill to be processed")
    assert run.poll() is None, "make run itself kept running"
    assert http_json("GET", status_url)["done"] == len(symbols)

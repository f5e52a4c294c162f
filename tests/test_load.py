"""A short `make loadtest`: Locust against the real system; zero failed requests and zero lost jobs."""
import csv
import os
import subprocess
import sys

import pytest
from rq import Queue

from config import Config
from jobs.fair import backlog
from tests.conftest import ROOT, WebServer, http_json, wait_until

pytestmark = pytest.mark.load


def test_a_short_load_run_fails_no_request_and_loses_no_job(redis_server, redis_client, tmp_path, start_workers):
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic")
    web = None
    try:
        web = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2, RATE_LIMIT_SYMBOLS="1000000/minute",
                        RATE_LIMIT_POLL="1000000/minute")
        locust = os.path.join(os.path.dirname(sys.executable), "locust")
        run = subprocess.run([locust, "-f", "bench/locustfile.py", "--headless", "--host", web.url, "-u", "20", "-r", "10",
                              "-t", "12s", "--only-summary", "--csv", str(tmp_path / "load"), "PageUser", "ScriptUser"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        with open(tmp_path / "load_stats.csv") as stats:
            total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
        assert int(total["Request Count"]) > 200, run.stdout[-2000:]
        assert int(total["Failure Count"]) == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert run.returncode == 0

        ids = [key.decode().rsplit(":", 1)[1] for key in redis_client.scan_iter("trends:analysis:*")]
        assert ids

        def every_analysis_complete() -> bool:
            states = [http_json("GET", f"{web.url}/api/analyses/{analysis_id}")["state"] for analysis_id in ids]
            return all(state == "finished" for state in states)

        wait_until(every_analysis_complete, timeout=30, what="every analysis to have all its results (no lost job)")
        assert backlog(redis_client, [Queue(Config.INTERACTIVE_QUEUE, connection=redis_client)])[0] == 0
    finally:
        if web:
            web.stop()


def test_the_flood_scenario_reports_the_interactive_clients_latency_and_fails_none_of_its_requests(
        redis_server, tmp_path, start_workers):
    """`make loadtest FLOOD=1`, shortened, against the issue's fleet: 2 workers at 200 ms a symbol."""
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=200)
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic")
    try:
        locust = os.path.join(os.path.dirname(sys.executable), "locust")
        run = subprocess.run([locust, "-f", "bench/locustfile.py", "--headless", "--host", web.url, "-u", "2", "-r", "2",
                              "-t", "12s", "--only-summary", "--csv", str(tmp_path / "flood"), "FloodingClient",
                              "InteractiveClient"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        web.stop()
    with open(tmp_path / "flood_stats.csv") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    interactive = rows["interactive: POST /get_trends (1 symbol)"]
    flood = rows["flood: POST /api/analyses (20 symbols)"]
    assert int(flood["Request Count"]) >= 20, "the flood queued far more than the fleet could run meanwhile"
    assert int(interactive["Request Count"]) >= 4 and int(interactive["Failure Count"]) == 0, run.stdout[-3000:]
    assert interactive["50%"] and interactive["99%"], "the summary gives the interactive client's p50 and p99"

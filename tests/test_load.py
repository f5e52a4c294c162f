"""A short `make loadtest`: Locust against the real system; zero failed requests and zero lost jobs."""
import csv
import os
import subprocess
import sys

import pytest
from rq import Queue

from config import Config
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
                              "-t", "12s", "--only-summary", "--csv", str(tmp_path / "load")],
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
        assert Queue(Config.INTERACTIVE_QUEUE, connection=redis_client).is_empty()
    finally:
        if web:
            web.stop()

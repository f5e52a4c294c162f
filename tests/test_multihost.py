"""The fleet across real network hosts: Redis, the web app and two worker hosts, each its own address."""
import os
import subprocess
import time

import pytest
from redis import Redis
from rq import Worker

from scripts.procfile import commands
from scripts.redis_server import answers
from tests.conftest import ROOT, analysis_jobs, http_json, wait_until
from tests.netns import Lan, unavailable_reason

# One fleet at a time: the namespaces and addresses are fixed. `make test` runs each file in one test
# process (--dist loadfile), so this module's fixture builds the fleet once, in one process.
pytestmark = pytest.mark.multihost
PASSWORD = "lan-test-password"
WORKER_SETTINGS = {  # short timeouts so a lost host's job is re-run within seconds
    "PRICE_SOURCE": "synthetic", "SYNTHETIC_LATENCY_MS": "100", "WORKERS": "2", "JOB_TIMEOUT": "3",
    "WORKER_LOST_AFTER": "3", "MAINTENANCE_INTERVAL": "1",
}


class Hosts:
    """The processes started on the LAN's hosts, each logging to its own file, all stopped together."""

    def __init__(self, lan: Lan, logs, **env: str):
        self.lan, self.logs, self.env = lan, logs, dict(os.environ, **env)
        self.processes, self.log_files = [], []

    def start(self, host: str, argv: list[str], **settings: str) -> None:
        self.log_files.append(open(self.logs / f"{host}.log", "w"))
        self.processes.append(subprocess.Popen(self.lan.command(host, argv), cwd=ROOT, env=dict(self.env, **settings),
                                               stdout=self.log_files[-1], stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # a cut-off host's worker waits to write its job's outcome
                process.kill()
                process.wait()
        for log in self.log_files:
            log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Redis on SUBNET.1, the web app on .2, workers on hosts w1 (.3) and w2 (.4): a subnet of this run's own."""
    reason = unavailable_reason()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the multi-host test, but {reason}")
    if reason:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("fleet")
    lan, hosts = Lan(), None
    try:
        redis_ip, web_ip = lan.add_host("redis", 1), lan.add_host("web", 2)
        lan.add_host("w1", 3)
        lan.add_host("w2", 4)
        redis_url = f"redis://:{PASSWORD}@{redis_ip}:6379/0"
        hosts = Hosts(lan, logs, REDIS_URL=redis_url, YFINANCE_CACHE_DIR=str(logs / "yf"))
        hosts.start("redis", commands()["redis"], REDIS_BIND=redis_ip, REDIS_REQUIREPASS=PASSWORD,
                    REDIS_DATA_DIR=str(logs / "redis-data"))
        wait_until(lambda: answers(redis_url), timeout=20, what="Redis on its host")
        client = Redis.from_url(redis_url)
        hosts.start("web", commands()["web"], HOST=web_ip, PORT="8000", WEB_PROCESSES="1",
                    JOB_TIMEOUT=WORKER_SETTINGS["JOB_TIMEOUT"])
        for host in ("w1", "w2"):
            hosts.start(host, commands()["worker"], **WORKER_SETTINGS)
        wait_until(lambda: Worker.count(connection=client) == 4, timeout=40, what="4 workers on 2 hosts")
        base_url = f"http://{web_ip}:8000"
        wait_until(lambda: _answers_http(base_url), timeout=20, what="the web app on its host")
        yield {"lan": lan, "redis": client, "url": base_url}
    finally:
        if hosts:
            hosts.stop()
        lan.close()


def _answers_http(url: str) -> bool:
    try:
        return http_json("GET", url + "/healthz")["status"] == "ok"
    except OSError:
        return False


def run_analysis(fleet, symbols: list[str] | None, status_url: str = "") -> dict:
    """Start an analysis of `symbols` (or follow the one at `status_url`) until it ends."""
    status_url = status_url or http_json("POST", fleet["url"] + "/api/analyses", {"symbols": symbols})["status_url"]
    url = fleet["url"] + status_url
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = http_json("GET", url)
        if body["state"] in ("finished", "partial", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"analysis did not finish: {body['state']} {body['done']}/{body['total']}")


def hosts_that_ran(fleet, analysis: dict) -> set[str]:
    names = {job.worker_name for job in analysis_jobs(fleet["redis"], analysis["id"])}
    return {name.split(".")[0] for name in names if name}


def test_health_sees_workers_on_both_hosts(fleet):
    health = http_json("GET", fleet["url"] + "/healthz")
    assert health["hosts"] == {"w1": 2, "w2": 2}


def test_jobs_run_on_both_worker_hosts(fleet):
    body = run_analysis(fleet, [f"S{i}" for i in range(40)])
    assert body["state"] == "finished" and body["done"] == 40
    assert hosts_that_ran(fleet, body) == {"w1", "w2"}


def test_a_worker_host_cut_off_mid_run_loses_no_symbol(fleet):
    created = http_json("POST", fleet["url"] + "/api/analyses", {"symbols": [f"C{i}" for i in range(60)]})

    def running_on_w1() -> list[str]:
        jobs = analysis_jobs(fleet["redis"], created["id"])
        return [job.id for job in jobs if job.get_status(refresh=False) == "started" and
                (job.worker_name or "").startswith("w1.")]

    # Cut the link while w1 runs a job (read from Redis, not through the web app, so a slow poll cannot miss it).
    wait_until(lambda: running_on_w1(), timeout=30, what="a job of the analysis running on w1")
    fleet["lan"].cut("w1")
    body = run_analysis(fleet, None, status_url=created["status_url"])
    assert body["state"] == "finished", [s for s in body["symbols"] if s["state"] != "done"]
    assert body["done"] == 60
    assert all("predictions" in s["result"] for s in body["symbols"])
    retried = [job for job in analysis_jobs(fleet["redis"], body["id"]) if job.retries_left == 1]
    assert retried, "the jobs w1 was running when cut off were found abandoned and run again"
    assert {job.worker_name.split(".")[0] for job in retried} == {"w2"}


def test_two_runs_at_once_get_networks_of_their_own():
    """Each Lan picks a free 10.x.y.0/24: a second run at once (another checkout's CI) reaches its own hosts, not ours."""
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    lans = [Lan(), Lan()]
    try:
        addresses = [lan.add_host("h", 1) for lan in lans]
        assert addresses[0] != addresses[1]
        for lan, address in zip(lans, addresses):  # this machine reaches each host through that Lan's own link
            route = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True).stdout
            assert f" dev {lan.tag}ci " in route, route
    finally:
        for lan in lans:
            lan.close()

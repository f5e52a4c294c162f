"""A Sentinel-managed Redis (redis+sentinel://): every process follows the primary through a failover, no restarts.

Real servers, as `make run HA=1` runs them: three Redis servers and three sentinels (the same binary, `--sentinel`).
"""
import base64
import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from redis import Redis
from rq import Worker

from jobs import tasks
from jobs.connection import NoReplicasError
from jobs.records import REDIS_UNAVAILABLE
from jobs.sources import SyntheticSource
from scripts.redis_server import group_server_lines
from tests.conftest import (
    ROOT,
    RedisServer,
    SentinelGroup,
    WebServer,
    analysis_jobs,
    children,
    free_port,
    http_json,
    http_status,
    process_running,
    wait_until,
    worker_of,
)
from webapp import create_app


@pytest.fixture
def group(tmp_path):
    group = SentinelGroup(tmp_path)
    yield group
    group.stop()


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_every_process_follows_the_primary_through_a_failover_without_a_restart(group, start_workers, tmp_path):
    workers = start_workers(group.url, 2, PRICE_SOURCE="synthetic")
    web = WebServer(group.url, tmp_path / "web.log", DASHBOARD_USER="ops", DASHBOARD_PASSWORD="s3cret")
    dashboard = urllib.request.Request(f"{web.url}/rq/0/data/workers.json",
                                       headers={"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()})
    try:
        before = http_json("POST", web.url + "/get_trends", {"symbols": ["AAPL", "MSFT"]})
        assert before["status"] == "success"
        primary = group.primary_server()
        on_primary = Redis.from_url(primary.url)
        assert on_primary.keys("trends:limits*"), "the rate limiter counts on the primary, through the sentinels"
        names = workers.names()
        health, read_at = http_json("GET", web.url + "/healthz")["replication"], time.monotonic()
        assert health["primary"] == f"127.0.0.1:{primary.port}" and len(health["replicas"]) == 2, health
        metrics = http_text(web.url + "/metrics")
        assert "trends_redis_replicas 2.0" in metrics and f'trends_redis_primary{{address="127.0.0.1:{primary.port}"}}' in metrics
        primary.process.kill()  # kill -9: no goodbye to the replica or the sentinels
        primary.process.wait()
        wait_until(lambda: group.primary_port() != primary.port, timeout=30, what="the sentinels to promote the replica")

        def answers_again() -> bool:
            try:
                return http_json("POST", web.url + "/get_trends", {"symbols": ["GOOG"]})["status"] == "success"
            except OSError:  # 503 while the web app's connections find the new primary
                return False

        wait_until(answers_again, timeout=30, what="a request answered in full by the new primary's fleet")
        assert web.process.poll() is None and workers.names() == names, "the same web app and workers, no restarts"
        after = http_json("GET", web.url + "/healthz")
        assert after["status"] == "ok"
        assert after["replication"]["primary"] == f"127.0.0.1:{group.primary_port()}" != health["primary"]
        assert after["replication"]["failover_epoch"] > health["failover_epoch"], "the sentinels' epoch: a failover"
        unchanged = health["primary_for_seconds"] + time.monotonic() - read_at  # had the primary stayed
        assert after["replication"]["primary_for_seconds"] < unchanged - 3, "counted from the failover"
        workers_shown = json.load(urllib.request.urlopen(dashboard, timeout=10))["workers"]
        assert len(workers_shown) == 2, "rq-dashboard follows the primary too"
    finally:
        web.stop()
    new_primary = group.primary()
    assert {w.name for w in Worker.all(connection=new_primary)} == names



class Fleet:
    """The real web app and two workers on the group's URL; an analysis followed through whatever the group does."""

    def __init__(self, group: SentinelGroup, start_workers, tmp_path):
        self.group = group
        self.workers = start_workers(group.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=100)
        self.web = WebServer(group.url, tmp_path / "web.log", MAX_SYMBOLS=150, RATE_LIMIT_SYMBOLS="10000/minute")
        self.names = self.workers.names()

    def start(self, count: int) -> str:
        created = http_json("POST", self.web.url + "/api/analyses", {"symbols": [f"F{n}" for n in range(count)]})
        return created["id"]

    def under_way(self, count: int, done: int) -> tuple[str, int]:
        """Start an analysis of `count` symbols and wait until `done` have ended; give its id and the runs before it."""
        runs, analysis = self.runs(), self.start(count)
        self.wait_for(analysis, lambda body: body["done"] >= done, "the analysis to be under way")
        return analysis, runs

    def status(self, analysis_id: str) -> dict | None:
        """The analysis's status, or None while Redis is unavailable (503); a 404 fails the test at once."""
        try:
            return http_json("GET", f"{self.web.url}/api/analyses/{analysis_id}")
        except urllib.error.HTTPError as refused:
            assert refused.code == 503, f"an accepted analysis answered {refused.code}"
            return None
        except OSError:
            return None

    def wait_for(self, analysis_id: str, condition, what: str, timeout: float = 90) -> dict:
        seen = {}

        def met() -> bool:
            body = self.status(analysis_id)
            seen["body"] = body or seen.get("body")
            return body is not None and condition(body)

        wait_until(met, timeout=timeout, what=what)
        return seen["body"]

    def runs(self) -> int:
        client = self.group.primary()
        return sum(worker.successful_job_count + worker.failed_job_count for worker in Worker.all(connection=client))

    def kill_primary(self) -> RedisServer:
        primary = self.group.primary_server()
        primary.process.kill()
        primary.process.wait()
        wait_until(lambda: self.group.primary_port() != primary.port, timeout=30, what="the sentinels to promote a replica")
        return primary

    def check_finished(self, analysis_id: str, count: int, runs_before: int) -> None:
        body = self.wait_for(analysis_id, lambda b: b["state"] in ("finished", "partial", "failed"), "the analysis to end")
        assert body["state"] == "finished" and body["done"] == count, [s for s in body["symbols"] if s["state"] != "done"]
        assert all("predictions" in symbol["result"] for symbol in body["symbols"])
        assert self.runs() - runs_before == count, "one outcome a symbol: none lost, none repeated"
        assert self.web.process.poll() is None and self.workers.names() == self.names, "the same processes, no restarts"

    def stop(self) -> None:
        self.web.stop()


@pytest.fixture
def fleet(group, start_workers, tmp_path):
    fleet = Fleet(group, start_workers, tmp_path)
    yield fleet
    fleet.stop()


def test_the_primary_killed_mid_analysis_loses_nothing_the_analysis_was_promised(fleet):
    analysis, runs = fleet.under_way(150, 20)
    fleet.kill_primary()
    fleet.check_finished(analysis, 150, runs)


def test_two_failovers_in_a_row_lose_nothing(fleet, group):
    analysis, runs = fleet.under_way(150, 10)
    first = fleet.kill_primary()
    first.start()  # back as a replica of the new primary (the sentinels say so): three servers again
    wait_until(lambda: group.primary().info("replication")["connected_slaves"] == 2,
               timeout=30, what="the restarted server to replicate the new primary")
    fleet.wait_for(analysis, lambda body: body["done"] >= 60, "the analysis to go on after the first failover")
    fleet.kill_primary()
    fleet.check_finished(analysis, 150, runs)


def test_a_paused_primary_is_replaced_and_takes_no_write_that_is_lost(fleet, group):
    """SIGSTOP past down-after, then SIGCONT: demoted, it refused writes meanwhile (min-replicas-max-lag), none lost."""
    analysis, runs = fleet.under_way(150, 20)
    paused = group.primary_server()
    paused.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: group.primary_port() != paused.port, timeout=30, what="the sentinels to promote a replica")
    finally:
        paused.process.send_signal(signal.SIGCONT)
    wait_until(lambda: Redis.from_url(paused.url).info("replication")["role"] == "slave", timeout=30,
               what="the old primary to be made a replica")
    fleet.check_finished(analysis, 150, runs)


def test_a_failover_with_one_sentinel_down_still_happens(fleet, group):
    port, sentinel = group.sentinels[0]
    sentinel.kill()
    sentinel.wait()
    analysis, runs = fleet.under_way(60, 10)
    fleet.kill_primary()  # two sentinels left: the quorum of two is met
    fleet.check_finished(analysis, 60, runs)


@pytest.mark.parametrize("script, code, said", [
    ("scripts/redis_server.py", 78, "make redis runs one server, on REDIS_URL's port: REDIS_URL names a Sentinel group"),
    ("scripts/run.py", 1, "no primary answers for the Sentinel group REDIS_URL names"),
])
def test_make_redis_and_make_run_say_what_to_do_with_a_sentinel_url_that_answers_nothing(script, code, said, tmp_path):
    env = dict(os.environ, REDIS_URL=f"redis+sentinel://127.0.0.1:{free_port()}/trends", REDIS_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code and said in done.stderr, (done.returncode, done.stderr[-500:])
    assert "Traceback" not in done.stderr


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    for base in random.sample(range(20_000, 60_000, count), 200):
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    held.enter_context(socket.create_server(("127.0.0.1", port)))
            return base
        except OSError:
            continue
    raise AssertionError("no free ports in a row")


def test_make_run_ha_runs_the_system_on_a_sentinel_group_and_stops_all_of_it(tmp_path):
    first, sentinel, web_port = free_ports_in_a_row(3), free_ports_in_a_row(3), free_port()
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{first}/0", SENTINEL_PORT=str(sentinel), PORT=str(web_port),
               REDIS_DATA_DIR=str(tmp_path / "redis"), PRICE_SOURCE="synthetic", WORKERS="2")
    log = open(tmp_path / "run.log", "w")
    run = subprocess.Popen([sys.executable, "-m", "scripts.run", "--ha"], cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT)  # `make run HA=1`
    url = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: http_status(url + "/healthz") == 200, timeout=90, what="make run HA=1 to serve")
        sentinels = ",".join(f"127.0.0.1:{port}" for port in range(sentinel, sentinel + 3))
        said = (tmp_path / "run.log").read_text()
        assert f"Other worker hosts: REDIS_URL='redis+sentinel://:PASSWORD@{sentinels}/trends/0' make worker" in said
        assert http_json("POST", url + "/get_trends", {"symbols": ["AAPL"]})["status"] == "success"
        replication = http_json("GET", url + "/healthz")["replication"]
        assert replication["primary"] == f"127.0.0.1:{first}" and len(replication["replicas"]) == 2, replication
        parts = children(run.pid)
        assert len(parts) == 8, "three servers, three sentinels, the workers and the web app"
        run.send_signal(signal.SIGINT)  # Ctrl-C
        assert run.wait(timeout=90) == 0
        wait_until(lambda: not any(process_running(pid) for pid in parts), what="every part to exit")
    finally:
        if run.poll() is None:
            run.kill()
        log.close()


def test_make_sentinel_open_to_the_network_needs_a_password_of_its_own(tmp_path):
    env = dict(os.environ, REDIS_BIND="0.0.0.0", REDIS_REQUIREPASS="group-password", REDIS_DATA_DIR=str(tmp_path),
               REDIS_SENTINEL_PASSWORD="")
    done = subprocess.run([sys.executable, "-m", "scripts.sentinel"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 78 and "set REDIS_SENTINEL_PASSWORD" in done.stderr, done.stderr[-500:]


def test_noreplicas_is_a_connection_error_to_every_client(tmp_path):
    """jobs/connection.py teaches redis-py the NOREPLICAS error code: this fails, naming it, if an upgrade drops that."""
    server = RedisServer(str(tmp_path / "alone"), extra=group_server_lines(""))  # a group's server with no replica
    server.start()
    try:
        client = Redis.from_url(server.url)
        for write in (lambda: client.set("k", 1), lambda: client.eval("return redis.call('SET', KEYS[1], 1)", 1, "k"),
                      lambda: client.pipeline().set("k", 1).execute()):
            with pytest.raises(NoReplicasError):
                write()
        assert issubclass(NoReplicasError, REDIS_UNAVAILABLE), "waited out by the workers, a 503 from the web app"
        client.close()
    finally:
        server.stop()


def test_nothing_is_told_to_a_client_before_a_replica_has_it(fleet, group):
    """With both replicas paused, a new analysis and a poll with results answer 503, not what a failover could undo."""
    finished = fleet.start(5)
    fleet.wait_for(finished, lambda body: body["state"] == "finished", "a first analysis to finish")
    replicas = [server for server in group.servers if server.port != group.primary_port()]
    for replica in replicas:
        replica.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_json("POST", fleet.web.url + "/api/analyses", {"symbols": ["UNSEEN"]})
        with refused.value:  # the answer's connection, closed once read
            assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "5"
            assert "no replica acknowledging writes" in json.load(refused.value)["message"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_json("GET", f"{fleet.web.url}/api/analyses/{finished}")
        with refused.value:
            assert refused.value.code == 503
    finally:
        for replica in replicas:
            replica.process.send_signal(signal.SIGCONT)
    wait_until(lambda: fleet.status(finished) is not None, timeout=30, what="answers again once a replica acknowledges")


def test_a_job_runs_only_once_a_replica_has_its_start(group, monkeypatch, caplog):
    """A failover loses what no replica has: a lost start would let the job run again without using a retry.

    The start waits longer than WORKER_LOST_AFTER while another worker reaps (the primary told to take
    writes without a replica meanwhile): the waiting start is kept alive, not given up on.
    """
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    app = create_app({"REDIS_URL": group.url, "TESTING": True})
    created = app.test_client().post("/api/analyses", json={"symbols": ["AAPL"]}).json
    job = analysis_jobs(app.redis, created["id"])[0]
    worker, reaper, ran, before_a_replica_had_it = worker_of(app), worker_of(app), [], []
    perform_job = worker.perform_job
    monkeypatch.setattr(worker, "perform_job", lambda *args: (ran.append(args[0].id), perform_job(*args))[1])
    replicas = [server for server in group.servers if server.port != group.primary_port()]
    with group.primary() as primary:
        primary.config_set("min-replicas-max-lag", 60)

    def resume_once_the_start_waited() -> None:
        try:
            wait_until(lambda: "replicas acknowledged the write" in caplog.text, timeout=60,
                       what="the worker to wait for a replica's acknowledgement of the start")
            reaping_until = time.monotonic() + worker.lost_after + 2
            while time.monotonic() < reaping_until:  # past the start's first expiry
                for queue in app.queues:
                    reaper.reap(queue)
                time.sleep(0.3)
            before_a_replica_had_it.append(list(ran))
        finally:
            for replica in replicas:
                replica.process.send_signal(signal.SIGCONT)

    caplog.set_level(logging.INFO)
    for replica in replicas:
        replica.process.send_signal(signal.SIGSTOP)
    watcher = threading.Thread(target=resume_once_the_start_waited)
    watcher.start()
    try:
        worker.work(burst=True, logging_level="INFO")  # RQ's loop needs the main thread (signals)
        watcher.join()
        assert before_a_replica_had_it == [[]], "the job ran while no replica had its start"
        assert ran == [job.id]
        assert app.test_client().get(created["status_url"]).json["state"] == "finished"
        assert job.fetch(job.id, connection=app.redis).retries_left == app.config["JOB_RETRIES"], "a retry was used"
    finally:
        pool = app.redis.connection_pool
        for client in [app.redis, *pool.sentinel_manager.sentinels]:
            client.connection_pool.disconnect()

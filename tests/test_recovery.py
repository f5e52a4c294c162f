"""Lost work comes back fenced, a full Redis is waited out, a refused password stops every process at once (jobs/recovery.py)."""
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from redis import Redis
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.worker import WorkerStatus

from config import REFUSED, ROOT, Config
from jobs import tasks
from jobs.job_class import TrendsJob
from jobs.sources import SyntheticSource
from scripts.procfile import commands
from tests.conftest import RedisServer, WebServer, analysis_jobs, children, free_port, http_json, wait_until, worker_of
from webapp import create_app


@pytest.mark.parametrize("retries", [0, 1])
def test_the_reaper_and_a_late_outcome_cannot_both_win(app, client, monkeypatch, retries):
    """Cleanup held just after its read while the paused attempt, resumed, stores its outcome: the outcome stands."""
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    late, reaper = worker_of(app), worker_of(app)
    job, queue = late._job_taken(*late._take_one(None))
    job.retries_left = retries
    job.save(include_meta=False)
    execution = late._register(job)
    registry = queue.started_job_registry
    app.redis.zadd(registry.key, {execution.composite_key: time.time() - 1})  # past WORKER_LOST_AFTER: paused
    fetch = TrendsJob.fetch

    def read_then_resume_the_late_attempt(*args, **kwargs):
        read = fetch(*args, **kwargs)  # the reaper has read the attempt's job: status "started"
        if read.id == job.id and not job.ended_at:
            late.perform_job(job, queue, execution)  # SIGCONT: the attempt ends and stores its outcome now
        return read

    monkeypatch.setattr(TrendsJob, "fetch", read_then_resume_the_late_attempt)
    reaper.clean_registries()
    assert job.ended_at, "the late attempt ran inside the reaper's window"
    job = analysis_jobs(app.redis, created["id"])[0]
    assert job.get_status() == JobStatus.FINISHED
    assert [result.type for result in job.results()] == [Result.Type.SUCCESSFUL], "no failure stored after it"
    assert job.id not in queue.get_job_ids(), "not queued to run again"
    assert client.get(created["status_url"]).json["state"] == "finished"
    assert not app.redis.zcard(registry.key)


def test_the_reaper_gives_up_on_an_expired_attempt_once(app, client, monkeypatch):
    """Two workers reaping the same expired attempt: the job is queued again once, its retries used once."""
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    lost, first, second = worker_of(app), worker_of(app), worker_of(app)
    job, queue = lost._job_taken(*lost._take_one(None))
    execution = lost._register(job)
    app.redis.zadd(queue.started_job_registry.key, {execution.composite_key: time.time() - 1})
    retries = job.retries_left
    first.reap(queue)
    second.reap(queue)
    job = analysis_jobs(app.redis, created["id"])[0]
    assert queue.get_job_ids() == [job.id] and job.get_status() == JobStatus.QUEUED
    assert job.retries_left == retries - 1


def test_a_full_redis_stops_no_worker_and_fails_no_symbol(tmp_path, start_workers):
    """maxmemory reached mid-job for longer than WORKER_LOST_AFTER: the symbol is answered, once, by the same workers.

    No heartbeat lands while Redis is full, so the running attempt's registration expires meanwhile;
    the idle worker's maintenance, once memory frees, must let it beat again before giving it up
    (with no retries, a give-up fails the symbol).
    """
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    redis = Redis.from_url(server.url)
    latency = (Config.WORKER_LOST_AFTER + 4) * 1000
    try:
        workers = start_workers(server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=latency, JOB_RETRIES=0,
                                MAINTENANCE_INTERVAL=1)
        pids = set(children(workers.process.pid))
        client = create_app({"REDIS_URL": server.url, "JOB_RETRIES": 0}).test_client()
        created = client.post("/api/analyses", json={"symbols": ["FULL"]}).json
        job = analysis_jobs(redis, created["id"])[0]
        wait_until(lambda: job.get_status() == JobStatus.STARTED, what="the job to run")
        redis.config_set("maxmemory", 1)  # full: every write refused, as at maxmemory with noeviction
        time.sleep(Config.WORKER_LOST_AFTER + 2)  # beats, the idle worker's looks and maintenance meet the full Redis
        started = redis.zrange(StartedJobRegistry("trends", connection=redis).key, 0, -1, withscores=True)
        assert started and all(expiry < time.time() for _, expiry in started), "the attempt expired while Redis was full"
        redis.config_set("maxmemory", 0)
        wait_until(lambda: client.get(created["status_url"]).json["state"] == "finished", timeout=30,
                   what="the symbol to be answered once memory freed")
        assert client.get(created["status_url"]).json["symbols"][0]["state"] == "done"
        assert [result.type for result in job.results()] == [Result.Type.SUCCESSFUL], "run once, its outcome kept"
        assert set(children(workers.process.pid)) == pids, "no worker restarted"
        assert "exited with code" not in workers.log_text() and "Traceback" not in workers.log_text()
    finally:
        server.stop()


def test_a_redis_full_mid_batch_is_waited_out_and_every_symbol_answered_once(tmp_path, start_workers):
    """maxmemory reached while jobs run and others wait: outcomes and takes are held, not failed; no worker restarts."""
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    redis = Redis.from_url(server.url)
    try:
        workers = start_workers(server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=300)
        pids = set(children(workers.process.pid))
        client = create_app({"REDIS_URL": server.url}).test_client()
        symbols = [f"MID{n}" for n in range(30)]
        created = client.post("/api/analyses", json={"symbols": symbols}).json
        jobs = analysis_jobs(redis, created["id"])
        wait_until(lambda: sum(job.get_status() == JobStatus.FINISHED for job in jobs) >= 4, what="a few symbols answered")
        redis.config_set("maxmemory", 1)  # full: every write refused, as at maxmemory with noeviction
        time.sleep(3)  # ten jobs' time: running jobs end and wait to store, idle workers try to take
        assert sum(job.get_status() == JobStatus.FINISHED for job in jobs) < len(symbols), "the batch was mid-way"
        redis.config_set("maxmemory", 0)
        wait_until(lambda: client.get(created["status_url"]).json["state"] == "finished", timeout=60,
                   what="every symbol to be answered once memory freed")
        assert [s["state"] for s in client.get(created["status_url"]).json["symbols"]] == ["done"] * len(symbols)
        assert all([r.type for r in job.results()] == [Result.Type.SUCCESSFUL] for job in jobs), "each ran once"
        assert set(children(workers.process.pid)) == pids, "no worker restarted"
        log = workers.log_text()
        assert "Redis unavailable" in log, log[-3000:]
        assert "exited with code" not in log and "Traceback" not in log and "unexpectedly" not in log
    finally:
        server.stop()


def test_an_idle_take_writes_nothing_so_a_full_redis_does_not_hold_it(app):
    worker = worker_of(app)
    app.redis.config_set("maxmemory", 1)  # every write refused
    try:
        assert worker._take_one(None) is None
    finally:
        app.redis.config_set("maxmemory", 0)


def test_a_stop_request_mid_job_while_redis_is_away_does_not_end_the_job(tmp_path):
    """RQ notes a stop request in Redis from its signal handler: with Redis away, that must not raise into the job."""
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    app = create_app({"REDIS_URL": server.url})
    worker = worker_of(app)
    server.stop()
    worker.set_state(WorkerStatus.BUSY)  # as during a job (Redis away: noted here only)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.request_stop(signal.SIGTERM, None)  # RQ's SIGTERM handler; raised, it would end the job with a traceback
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


@pytest.fixture
def locked_redis(tmp_path):
    """A Redis that asks a password ('right')."""
    server = RedisServer(str(tmp_path / "redis"), credentials=":right", password="right")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("credentials", [":wrong", ""])
def test_a_refused_password_stops_the_workers_at_once_saying_so(locked_redis, tmp_path, credentials):
    env = dict(os.environ, REDIS_URL=locked_redis.url_for(credentials), WORKERS="2", PRICE_SOURCE="synthetic")
    done = subprocess.run(commands()["worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == REFUSED
    assert "Redis refused the password" in done.stderr and "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_refused_password_stops_the_web_app_at_once_saying_so(locked_redis):
    env = dict(os.environ, REDIS_URL=locked_redis.url_for(":wrong"), PORT=str(free_port()))
    done = subprocess.run(commands()["web"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == REFUSED, done.stderr[-2000:]
    assert "Redis refused the password" in done.stderr and "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_ctrl_c_while_a_worker_waits_for_redis_stops_it_without_a_traceback(tmp_path):
    log = tmp_path / "workers.log"
    with open(log, "w") as out:  # a session of its own: Ctrl-C goes to the terminal's whole foreground group
        supervisor = subprocess.Popen(commands()["worker"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                                                                       WORKERS="1", PRICE_SOURCE="synthetic"))
    try:
        wait_until(lambda: "Redis unreachable" in log.read_text(), what="the worker to say it waits for Redis")
        os.killpg(supervisor.pid, signal.SIGINT)
        assert supervisor.wait(timeout=30) != 0
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("demo", [False, True])
def test_make_run_against_a_redis_that_refuses_the_password_says_so(locked_redis, tmp_path, demo):
    env = dict(os.environ, REDIS_URL=locked_redis.url_for(":wrong"), REDIS_DATA_DIR=str(tmp_path / "data"),
               PORT=str(free_port()), **({"PRICE_SOURCE": "synthetic"} if demo else {}))
    done = subprocess.run([sys.executable, "-m", "scripts.run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == REFUSED
    assert "Redis refused the password" in done.stderr and "REDIS_DATA_DIR/password" in done.stderr


def test_make_run_whose_own_redis_asks_another_password_says_so(locked_redis, tmp_path):
    """make run's Redis still runs with a password other than the one in REDIS_DATA_DIR/password (a new data folder)."""
    env = dict(os.environ, REDIS_URL=locked_redis.url_for(""), REDIS_DATA_DIR=str(tmp_path / "data"),
               PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-m", "scripts.run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == REFUSED and "Redis refused the password" in done.stderr


def test_rq_key_prefix_is_followed_end_to_end(tmp_path):
    """RQ_KEY_PREFIX set for web app and workers: answers come, RQ's keys carry it, /metrics and the dashboard see the fleet."""
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    redis = Redis.from_url(server.url)
    env = dict(os.environ, REDIS_URL=server.url, WORKERS="2", PRICE_SOURCE="synthetic", RQ_KEY_PREFIX="myp")
    workers = subprocess.Popen(commands()["worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    web = None
    try:
        wait_until(lambda: redis.scard("myp:workers") == 2, timeout=30, what="2 workers to register under the prefix")
        web = WebServer(server.url, tmp_path / "web.log", RQ_KEY_PREFIX="myp", DASHBOARD_USER="ops",
                        DASHBOARD_PASSWORD="s3cret")
        answer = http_json("POST", f"{web.url}/get_trends", {"symbols": ["AAPL", "MSFT", "GOOG"] + [
            f"BULK{n}" for n in range(30)]})
        assert answer["status"] == "success", answer
        keys = {key.decode() for key in redis.keys("*")}
        assert not {key for key in keys if key.startswith("rq:")}, "no key under RQ's default prefix"
        assert {key for key in keys if key.startswith("myp:job:")}
        metrics = urllib.request.urlopen(f"{web.url}/metrics", timeout=10).read().decode()
        assert 'trends_workers{' in metrics and 'outcome="ok"' in metrics
        request = urllib.request.Request(f"{web.url}/rq/0/data/workers.json",
                                         headers={"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()})
        assert len(json.load(urllib.request.urlopen(request, timeout=10))["workers"]) == 2
    finally:
        if web:
            web.stop()
        workers.terminate()
        workers.wait(timeout=60)
        server.stop()

"""Faults with real processes: a worker SIGKILLed mid-job, Redis restarted, slow sources, duplicate work, pickles."""
import os
import pickle
import signal
import threading
import time
import zlib

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job

from tests.conftest import RedisServer, wait_until
from webapp import create_app

QUICK_RECOVERY = {"JOB_TIMEOUT": 3, "ABANDONED_JOB_GRACE": 1, "MAINTENANCE_INTERVAL": 1, "WORKER_TTL": 20}


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, which it may stop and start again (same port, same data)."""
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def test_a_worker_killed_mid_job_does_not_lose_the_symbol(redis_server, redis_client, start_workers):
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=1500, **QUICK_RECOVERY)
    app = create_app({"REDIS_URL": redis_server.url, "TRENDS_TIMEOUT": 40, "JOB_TIMEOUT": QUICK_RECOVERY["JOB_TIMEOUT"]})
    answer = {}
    waiting = threading.Thread(target=lambda: answer.update(app.test_client().post(
        "/get_trends", json={"symbols": ["AAPL", "MSFT"]}).json))
    waiting.start()
    wait_until(lambda: _busy_workers(redis_client), what="a worker to start a job")
    victim = _busy_workers(redis_client)[0]
    os.kill(int(victim.rsplit(".", 1)[1]), signal.SIGKILL)
    waiting.join(timeout=45)
    assert answer["status"] == "success", answer
    assert [r["symbol"] for r in answer["results"]] == ["AAPL", "MSFT"]


def _busy_workers(redis: Redis) -> list[str]:
    names = [key.decode().rsplit(":", 1)[1] for key in redis.smembers("rq:workers")]
    return [name for name in names if redis.hget(f"rq:worker:{name}", "state") == b"busy"]


def test_redis_restart_gives_503_then_everything_reconnects_by_itself(own_redis, start_workers):
    start_workers(own_redis.url, PRICE_SOURCE="synthetic")
    client = create_app({"REDIS_URL": own_redis.url}).test_client()
    assert client.post("/get_trends", json={"symbols": ["AAPL"]}).json["status"] == "success"
    own_redis.stop()
    down = client.post("/get_trends", json={"symbols": ["AAPL"]})
    assert down.status_code == 503 and "unreachable" in down.json["message"]
    assert client.get("/healthz").status_code == 503
    own_redis.start()
    body = client.post("/get_trends", json={"symbols": ["MSFT", "GOOG"]}).json  # same app, same workers
    assert body["status"] == "success"


def test_jobs_queued_before_a_hard_redis_restart_are_all_processed_after_it(own_redis, start_workers):
    client = create_app({"REDIS_URL": own_redis.url}).test_client()
    symbols = ["AAPL", "MSFT", "GOOG", "NOPE"]
    url = client.post("/api/analyses", json={"symbols": symbols}).json["status_url"]
    time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    own_redis.process.kill()  # no clean shutdown
    own_redis.process.wait()
    own_redis.start()
    start_workers(own_redis.url, PRICE_SOURCE="synthetic")
    wait_until(lambda: client.get(url).json["state"] == "partial", timeout=20, what="the analysis to end")
    states = {s["symbol"]: s["state"] for s in client.get(url).json["symbols"]}
    assert states == {"AAPL": "done", "MSFT": "done", "GOOG": "done", "NOPE": "error"}


def test_a_slow_symbol_is_cut_off_at_the_job_timeout(redis_server, redis_client, start_workers):
    start_workers(redis_server.url, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=10_000)
    client = create_app({"REDIS_URL": redis_server.url, "JOB_TIMEOUT": 1}).test_client()  # the web app sets it
    started = time.monotonic()
    body = client.post("/get_trends", json={"symbols": ["AAPL"]}).json
    assert time.monotonic() - started < 5
    assert "longer than the job timeout (1 s)" in body["results"][0]["error"]


def test_concurrent_requests_share_jobs_and_fresh_results_are_reused(redis_server, redis_client, start_workers):
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=500)
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    urls = [client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT"]}).json["status_url"] for _ in range(3)]
    for url in urls:
        wait_until(lambda: client.get(url).json["state"] == "finished", what="each analysis to finish")
    results = [[s["result"] for s in client.get(url).json["symbols"]] for url in urls]
    assert results[0] == results[1] == results[2]
    assert redis_client.hget("trends:stats:jobs", "trends:finished") == b"2", "one job per symbol, not per request"
    again = client.post("/api/analyses", json={"symbols": ["MSFT"]}).json["status_url"]
    assert client.get(again).json["state"] == "finished", "a fresh result is reused at once"
    assert redis_client.hget("trends:stats:jobs", "trends:finished") == b"2"


def test_a_pickle_planted_in_a_job_is_rejected_not_executed(redis_server, redis_client, tmp_path, start_workers):
    marker = tmp_path / "pwned"
    start_workers(redis_server.url, PRICE_SOURCE="synthetic")
    queue = Queue("trends", connection=redis_client)  # RQ's default serializer: pickle
    job = Job.create(os.system, args=(f"touch {marker}",), connection=redis_client, id="planted")
    job.save()
    assert zlib.decompress(redis_client.hget("rq:job:planted", "data")).startswith(pickle.dumps(0)[:1])
    queue.push_job_id(job.id)
    wait_until(lambda: redis_client.hget("rq:job:planted", "status") == b"failed", what="the planted job to fail")
    assert not marker.exists(), "the pickle was executed"
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    assert client.post("/get_trends", json={"symbols": ["AAPL"]}).json["status"] == "success", "worker still serves"

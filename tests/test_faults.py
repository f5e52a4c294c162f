"""Faults with real processes: a worker SIGKILLed mid-job, Redis restarted, slow sources, duplicate work, pickles."""
import os
import pickle
import signal
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis
from rq import Callback, Queue, Worker
from rq.job import Job
from rq.results import Result
from rq.serializers import DefaultSerializer, JSONSerializer
from rq.webhook import Webhook

from config import ROOT, Config
from jobs.records import OPEN_ANALYSES_KEY, fair_key
from jobs.worker_scripts import TAKE_SCRIPT
from scripts.procfile import commands
from tests.conftest import RedisServer, WebServer, analysis_jobs, http_json, http_status, process_running, wait_until
from tests.redis_proxy import RedisProxy
from webapp import create_app
from webapp.shared_jobs import FIRST_CHUNK, READ_BATCH


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, which it may stop and start again (same port, same data)."""
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def test_with_default_settings_a_worker_killed_mid_job_costs_seconds_not_the_symbol(redis_server, redis_client,
                                                                                    start_workers):
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=1500)
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    answer = {}
    waiting = threading.Thread(target=lambda: answer.update(client.post("/get_trends", json={"symbols": ["AAPL", "MSFT"]}).json))
    waiting.start()
    wait_until(lambda: busy_workers(redis_client), what="a worker to start a job")
    os.kill(worker_pid(busy_workers(redis_client)[0]), signal.SIGKILL)
    waiting.join(timeout=20)  # the bound: every symbol back within 20 s of the kill
    assert not waiting.is_alive(), "no answer within 20 s of the kill"
    assert answer["status"] == "success", answer
    assert [r["symbol"] for r in answer["results"]] == ["AAPL", "MSFT"]
    assert all(len(r["predictions"]) == 5 for r in answer["results"])


def test_workers_whose_supervisor_is_killed_finish_their_job_and_stop(redis_server, redis_client, start_workers):
    """Nothing left running unsupervised (a restarted supervisor would start new workers beside them), nothing lost."""
    supervisor = start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=1500)
    workers = [worker_pid(name) for name in supervisor.names()]
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    url = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json["status_url"]
    wait_until(lambda: busy_workers(redis_client), what="a worker to start the job")
    supervisor.process.kill()
    try:
        wait_until(lambda: not any(process_running(pid) for pid in workers), timeout=30, what="both workers to stop")
    finally:  # never leave one running for the tests after this one
        subprocess.run(["kill", "-KILL", *map(str, workers)], stderr=subprocess.DEVNULL)
    assert client.get(url).json["state"] == "finished", "the running job was finished first (a warm stop)"


def test_a_job_taken_by_a_worker_paused_while_idle_runs_elsewhere_and_only_once(redis_server, redis_client,
                                                                                 start_workers):
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic")
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    victim, other = [w.name for w in Worker.all(connection=redis_client)]
    wait_until(lambda: redis_client.info("clients")["blocked_clients"] == 2, what="both workers to wait for a job")
    os.kill(worker_pid(victim), signal.SIGSTOP)
    try:
        # A ring the paused worker took costs the other at most its one-second look; the job runs there.
        url = client.post("/api/analyses", json={"symbols": ["IDLE0"]}).json["status_url"]
        wait_until(lambda: client.get(url).json["state"] == "finished", timeout=5, what="the other worker to run it")
        # Paused just after its take moved a job into its in-flight list (as a take with an outcome does); the
        # other worker is held meanwhile, so the job is the paused one's to hold:
        os.kill(worker_pid(other), signal.SIGSTOP)
        try:
            url = client.post("/api/analyses", json={"symbols": ["IDLE1"]}).json["status_url"]
            queues = [key for name in ("trends", "trends-bulk") for key in (f"rq:queue:{name}", fair_key(name))]
            taken = redis_client.eval(TAKE_SCRIPT, 7, f"trends:inflight:{victim}", "", "rq:queues", *queues, "rq:job:",
                                      "rq:queue:")
        finally:
            os.kill(worker_pid(other), signal.SIGCONT)
        assert taken and redis_client.llen(f"trends:inflight:{victim}") == 1
        wait_until(lambda: client.get(url).json["state"] == "finished", timeout=15,
                   what="the job the paused worker held to run elsewhere")
    finally:
        os.kill(worker_pid(victim), signal.SIGCONT)
    good = client.get(url).json
    wait_until(lambda: redis_client.get(f"trends:alive:{victim}"), what="the woken worker to beat again")
    time.sleep(1)  # room for it to (wrongly) run the job it held: a wrong pass at worst, never a false failure
    assert client.get(url).json == good
    assert len(analysis_jobs(redis_client, good["id"])[0].results()) == 1, "run once: the woken worker left it alone"


def test_fifty_identical_requests_at_once_run_one_job_and_all_get_its_result(redis_server, redis_client, start_workers,
                                                                               tmp_path):
    workers = start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=300)
    web = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2)
    try:
        start = threading.Barrier(50)

        def ask(_):
            start.wait()
            return http_json("POST", web.url + "/get_trends", {"symbols": ["FRESH"]})

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(ask, range(50)))
    finally:
        web.stop()
    assert [a["status"] for a in answers] == ["success"] * 50
    assert all(a["results"] == answers[0]["results"] for a in answers)
    counts = [(w.successful_job_count, w.failed_job_count) for w in Worker.all(connection=redis_client)]
    assert len(counts) == len(workers.names()) == 2
    assert sum(ok for ok, _ in counts) == 1 and sum(failed for _, failed in counts) == 0, counts


def test_overlapping_long_requests_at_once_run_each_symbol_once_and_answer_in_order(redis_server, redis_client,
                                                                                    start_workers, tmp_path):
    # Long enough to be claimed in several chunks and read in several batches (webapp/shared_jobs.py),
    # in orders whose chunks cross: each request creates some jobs and joins others' mid-claim.
    size = 3 * READ_BATCH
    assert size > 7 * FIRST_CHUNK, "chunks of 16, 32, 64, 128 and more"
    pool = [f"OV{n:03d}" for n in range(size)]
    orders = [pool, pool[::-1], pool[size // 2:] + pool[:size // 2], pool[::2] + pool[1::2], pool, pool[::-1]]
    settings = {"MAX_SYMBOLS": size, "BULK_THRESHOLD": size}
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", **settings)
    web = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2, **settings)
    try:
        start = threading.Barrier(len(orders))

        def ask(symbols):
            start.wait()
            return http_json("POST", web.url + "/get_trends", {"symbols": symbols}, timeout=120)

        with ThreadPoolExecutor(len(orders)) as pool_of_clients:
            answers = list(pool_of_clients.map(ask, orders))
    finally:
        web.stop()
    assert [a["status"] for a in answers] == ["success"] * len(orders)
    assert all([r["symbol"] for r in a["results"]] == order for a, order in zip(answers, orders))
    by_symbol = [{r["symbol"]: r for r in a["results"]} for a in answers]
    assert all(results == by_symbol[0] for results in by_symbol)
    counts = [(w.successful_job_count, w.failed_job_count) for w in Worker.all(connection=redis_client)]
    assert sum(ok for ok, _ in counts) == len(pool) and sum(failed for _, failed in counts) == 0, counts


def test_a_paused_worker_that_wakes_after_its_job_ran_elsewhere_cannot_overwrite_the_result(redis_server, redis_client,
                                                                                             start_workers):
    settings = {"PRICE_SOURCE": "synthetic", "SYNTHETIC_LATENCY_MS": 2000, "JOB_TIMEOUT": 5}
    workers = start_workers(redis_server.url, 2, **settings)
    client = create_app({"REDIS_URL": redis_server.url, "JOB_TIMEOUT": 5}).test_client()
    url = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json["status_url"]
    wait_until(lambda: busy_workers(redis_client), what="a worker to start the job")
    victim = busy_workers(redis_client)[0]
    os.kill(worker_pid(victim), signal.SIGSTOP)
    try:
        wait_until(lambda: client.get(url).json["state"] == "finished", timeout=30, what="the job to be run elsewhere")
        good = client.get(url).json
        job = analysis_jobs(redis_client, good["id"])[0]
        assert job.worker_name != victim
    finally:
        os.kill(worker_pid(victim), signal.SIGCONT)  # its job's timeout (5 s) is long past: SIGALRM fires at once
    wait_until(lambda: "outcome is dropped" in workers.log_text(), what="the woken worker to drop its late outcome")
    wait_until(lambda: worker_state(redis_client, victim) == "idle", what="the woken worker to be done with it")
    assert client.get(url).json == good
    assert [result.type for result in job.results()] == [Result.Type.SUCCESSFUL], "one outcome: the first attempt's"


def test_a_bulk_analysis_queued_longer_than_result_ttl_still_answers(redis_server, redis_client, start_workers, tmp_path):
    web = WebServer(redis_server.url, tmp_path / "web.log", RESULT_TTL=3, RESULT_CACHE_TTL=1)  # its keeper runs each second
    try:
        created = http_json("POST", web.url + "/api/analyses", {"symbols": [f"BACKLOG{i}" for i in range(25)]})
        status_url = web.url + created["status_url"]
        time.sleep(7)  # more than twice RESULT_TTL with no worker running: the jobs wait in the bulk queue
        assert http_json("GET", status_url)["state"] == "queued"
        start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic")
        wait_until(lambda: http_json("GET", status_url)["state"] == "finished", timeout=30, what="the analysis to end")
        assert http_json("GET", status_url)["done"] == 25
        wait_until(lambda: redis_client.zscore(OPEN_ANALYSES_KEY, created["id"]) is None, what="the keeper to close it")
        wait_until(lambda: http_status(status_url) == 404, timeout=15, what="it to expire RESULT_TTL after its last answer")
    finally:
        web.stop()


def worker_state(redis: Redis, name: str) -> str | None:
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=redis)
    return worker.get_state() if worker else None


def busy_workers(redis: Redis) -> list[str]:
    return [w.name for w in Worker.all(connection=redis) if w.get_state() == "busy"]


def worker_pid(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


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


def test_a_redis_restart_while_a_job_runs_costs_neither_the_worker_nor_the_work(own_redis, start_workers):
    # The job ends (its fetched prices not cacheable, its outcome not storable) while Redis is down.
    workers = start_workers(own_redis.url, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=3000)
    names = workers.names()
    client = create_app({"REDIS_URL": own_redis.url}).test_client()
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    url = created["status_url"]
    wait_until(lambda: client.get(url).json["state"] == "running", what="the job to start")
    own_redis.stop()
    wait_until(lambda: "keeping it, retrying" in workers.log_text(), timeout=30, what="the outcome to wait for Redis")
    own_redis.start()
    wait_until(lambda: client.get(url).json["state"] == "finished", timeout=30, what="the outcome, stored once Redis is back")
    assert workers.names() == names, "the worker kept running: no restart"
    [job] = analysis_jobs(Redis.from_url(own_redis.url), created["id"])
    assert job.retries_left == Config.JOB_RETRIES, "the job ran once: no retry used up"


# The worker tries again 1, 3, 7 and 12 s after the cut (jobs/recovery.py), each outage ends between two tries:
# a start cut off for 10 s (longer than WORKER_LOST_AFTER) lands at 12 s, after the worker's heartbeat thread has
# said it is alive again (every 2 s); one whose reply was lost is found applied at 3 s, before its expiry (6 s).
@pytest.mark.parametrize("write, mode, seconds, count", [
    ("list", "drop", 10, 2),  # the job's start, written late: with a fresh expiry, not taken for lost at once
    ("list", "lose_reply", 2, 2),  # the start applied, its reply lost: the retry finds it applied and runs the job
    ("zset", "lose_reply", 2, 1),  # the result stored, its reply lost: not reported as dropped
])
def test_a_worker_cut_off_from_redis_at_a_bookkeeping_write_runs_the_job_once(redis_server, redis_client, start_workers,
                                                                             write, mode, seconds, count):
    proxy = RedisProxy(redis_server.port)
    try:
        workers = start_workers(proxy.url, count, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=1000)
        client = create_app({"REDIS_URL": redis_server.url}).test_client()
        assert client.post("/get_trends", json={"symbols": ["WARM"]}).json["status"] == "success"  # scripts loaded
        proxy.arm(f"${len(write)}\r\n{write}\r\n".encode(), mode, seconds)  # the guarded script's first argument
        created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
        wait_until(proxy.fired.is_set, what=f"the worker's {write} write")
        wait_until(lambda: client.get(created["status_url"]).json["state"] == "finished", timeout=60,
                   what="the job to end")
        # Redis may have the outcome before its worker is through: once a next job is done, every worker is.
        assert client.post("/get_trends", json={"symbols": ["NEXT"]}).json["status"] == "success"
        runs = sum(w.successful_job_count for w in Worker.all(connection=redis_client))
        log = workers.log_text()
        workers.stop()  # through the proxy, so that they give back what they hold and sign off
    finally:
        proxy.close()
    [job] = analysis_jobs(redis_client, created["id"])
    assert job.retries_left == Config.JOB_RETRIES, "no retry used up: the job was never taken for lost"
    assert len(job.results()) == 1
    assert runs == 3, "WARM, AAPL and NEXT, once each"
    assert "keeping it, retrying" in log
    assert "went back to its queue" not in log and "given up on" not in log, "no false alarm"


def test_jobs_queued_before_a_hard_redis_restart_are_all_processed_after_it(own_redis, start_workers):
    client = create_app({"REDIS_URL": own_redis.url}).test_client()
    symbols = ["AAPL", "MSFT", "GOOG", "NOPE"]
    url = client.post("/api/analyses", json={"symbols": symbols}).json["status_url"]
    time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    own_redis.process.kill()  # no clean shutdown
    own_redis.process.wait()
    own_redis.start()
    start_workers(own_redis.url, PRICE_SOURCE="synthetic")
    wait_until(lambda: client.get(url).json["state"] == "partial", timeout=30, what="the analysis to end")
    states = {s["symbol"]: s["state"] for s in client.get(url).json["symbols"]}
    assert states == {"AAPL": "done", "MSFT": "done", "GOOG": "done", "NOPE": "error"}


def test_a_slow_symbol_is_cut_off_at_the_job_timeout(redis_server, redis_client, start_workers):
    start_workers(redis_server.url, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=10_000)
    client = create_app({"REDIS_URL": redis_server.url, "JOB_TIMEOUT": 1}).test_client()  # the web app sets it
    body = client.post("/get_trends", json={"symbols": ["AAPL"]}).json
    assert "longer than the job timeout (1 s)" in body["results"][0]["error"]
    counts = [(w.successful_job_count, w.failed_job_count) for w in Worker.all(connection=redis_client)]
    assert counts == [(0, 1)], "a timeout is the job's failure, not a result, and it is not run again"


def test_a_fresh_result_is_reused_and_a_stale_one_replaced(redis_server, redis_client, start_workers):
    start_workers(redis_server.url, 1, PRICE_SOURCE="synthetic")
    app = create_app({"REDIS_URL": redis_server.url, "RESULT_CACHE_TTL": 3, "RESULT_TTL": 20})
    client = app.test_client()

    def ask() -> dict:
        return client.post("/get_trends", json={"symbols": ["AAPL", "NOPE"]}).json

    def executions() -> list[tuple[int, int]]:
        return [(w.successful_job_count, w.failed_job_count) for w in Worker.all(connection=redis_client)]

    first = ask()
    assert first["status"] == "partial"
    assert ask() == first
    assert executions() == [(1, 1)], "the result and the failure are reused, not run again"
    time.sleep(3.5)  # past RESULT_CACHE_TTL (and a failure's shorter reuse)
    assert ask()["status"] == "partial"
    assert executions() == [(2, 2)], "stale: both run again"
    queue = app.interactive_queue
    job_ids = queue.finished_job_registry.get_job_ids() + queue.failed_job_registry.get_job_ids()
    assert len(job_ids) == 4, "a stale job is followed by a new one, never overwritten: whoever reads it keeps it"
    jobs = Job.fetch_many(job_ids, connection=redis_client, serializer=JSONSerializer)
    assert [len(job.results()) for job in jobs] == [1, 1, 1, 1]


def test_a_pickle_planted_in_a_job_is_rejected_not_executed(redis_server, redis_client, tmp_path, start_workers):
    marker = tmp_path / "pwned"
    start_workers(redis_server.url, PRICE_SOURCE="synthetic")
    queue = Queue(Config.INTERACTIVE_QUEUE, connection=redis_client, serializer=DefaultSerializer)  # RQ's pickle one
    job = Job.create(os.system, args=(f"touch {marker}",), connection=redis_client, id="planted",
                     serializer=DefaultSerializer)
    job.save()
    assert zlib.decompress(redis_client.hget("rq:job:planted", "data")).startswith(pickle.dumps(0)[:1])
    queue.push_job_id(job.id)
    wait_until(lambda: job.get_status(refresh=True) == "failed", what="the planted job to fail")
    assert not marker.exists(), "the pickle was executed"
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    assert client.post("/get_trends", json={"symbols": ["AAPL"]}).json["status"] == "success", "worker still serves"


@pytest.mark.parametrize("planted", [
    {"f": "os.system"},  # a JSON job naming another function: the attack RQ itself allows
    {"f": "jobs.tasks.analyze_symbol", "on_failure": Callback("os.system")},  # ours, with someone else's callback
    {"f": "jobs.tasks.analyze_symbol", "on_success": Callback("os.system")},
    {"f": "jobs.tasks.analyze_symbol", "webhooks": [Webhook("http://127.0.0.1:9/x", "finished")]},  # no requests out
])
def test_a_job_naming_code_that_is_not_ours_is_refused_before_import(redis_server, redis_client, tmp_path, start_workers,
                                                                     planted):
    marker = tmp_path / "pwned"
    workers = start_workers(redis_server.url, PRICE_SOURCE="synthetic")
    queue = Queue(Config.INTERACTIVE_QUEUE, connection=redis_client, serializer=JSONSerializer)
    args = (f"touch {marker}",) if planted["f"] == "os.system" else ("AAPL", 20, 5, "trend")
    job = queue.enqueue(planted["f"], *args, on_failure=planted.get("on_failure"), on_success=planted.get("on_success"),
                        webhooks=planted.get("webhooks"))
    wait_until(lambda: job.get_status() == "failed", what="the planted job to fail")
    assert not marker.exists(), "foreign code ran"
    job.refresh()
    named = "'a webhook to http://127.0.0.1:9/x'" if planted.get("webhooks") else "'os.system'"
    assert f"refused to run {named}: workers run only jobs.tasks.analyze_symbol" in job.meta["error"]
    assert f"refused to run {named}" in workers.log_text()
    assert redis_client.hget("trends:stats:jobs", "trends:refused") == b"1"
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    assert client.post("/get_trends", json={"symbols": ["MSFT"]}).json["status"] == "success", "our own jobs still run"


def test_workers_started_before_their_redis_wait_for_it_without_crashing(tmp_path):
    server = RedisServer(str(tmp_path / "redis"))  # not started yet
    log = tmp_path / "workers.log"
    with open(log, "w") as out:
        supervisor = subprocess.Popen(commands()["worker"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, REDIS_URL=server.url, WORKERS="1", PRICE_SOURCE="synthetic"))
    try:
        wait_until(lambda: "Redis unreachable" in log.read_text(), what="the worker to say it waits for Redis")
        server.start()
        wait_until(lambda: Worker.count(connection=Redis.from_url(server.url)) == 1, timeout=40,
                   what="the worker to register once Redis answers")
        assert "Traceback" not in log.read_text() and "starting another" not in log.read_text()
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=60)
        server.stop()

"""The project's worker class writes RQ's data model exactly as RQ's own SimpleWorker does, in fewer round trips."""
import os
import re
import signal
import threading
import time

import pytest
from redis import Redis
from rq import SimpleWorker, Worker
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.suspension import resume, suspend

from jobs import fenced_worker, tasks
from jobs.fair import staged_queues
from jobs.governor import PutBack
from jobs.job_class import SERIALIZER, TrendsJob, trends_queues
from jobs.records import INFLIGHT_WORKERS_KEY, JOB_STATS_KEY, fair_key, inflight_key
from jobs.sources import SyntheticSource
from jobs.worker import TrendsWorker
from tests.conftest import RedisServer, analysis_jobs, wait_until, waiting_job_ids, worker_of

VOLATILE = re.compile(rb"^\d{4}-\d\d-\d\dT[\d:.]+Z$|^[0-9a-f]{32}$")  # timestamps, execution ids


def shape(app, job: Job) -> dict:
    """What RQ's own API and storage say about a finished job, with times and ids left out."""
    job.refresh()
    redis = app.redis
    fields = {k: (b"*" if VOLATILE.match(v) else v) for k, v in redis.hgetall(job.key).items()
              if k not in (b"data", b"worker_name", b"description")}
    result = job.latest_result()
    return {
        "status": job.get_status(),
        "job fields": fields,
        "job ttl": redis.ttl(job.key) > 0,
        "result": (result.type, result.return_value["symbol"] if result.return_value else None),
        "result entries": len(job.results()),
        "finished registry": job.id in app.interactive_queue.finished_job_registry,
        "failed registry": job.id in app.interactive_queue.failed_job_registry,
        "started registry": app.interactive_queue.started_job_registry.get_job_ids(),
        "executions": [e.id for e in job.get_executions()],
        "queue": waiting_job_ids(app.redis, app.interactive_queue),
    }


@pytest.mark.parametrize("symbol", ["AAPL", "NOPE"])  # a result, and a failure (the synthetic source's unknown symbol)
def test_a_job_run_by_our_worker_looks_to_rq_as_one_run_by_rqs_own(app, client, run_jobs, monkeypatch, symbol):
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    shapes = []
    for worker_class, window in ((SimpleWorker, 20), (None, 21)):  # None: the project's (run_jobs)
        created = client.post("/api/analyses", json={"symbols": [symbol], "window": window}).json
        if worker_class:
            hand_the_turns_to_the_queue(app)
            worker_class(app.queues, connection=app.redis, serializer=SERIALIZER).work(burst=True, logging_level="WARNING")
        else:
            run_jobs(app)
        job = analysis_jobs(app.redis, created["id"])[0]
        shapes.append(shape(app, job))
    rq_own, ours = shapes
    rq_own["job fields"].pop(b"meta", None), ours["job fields"].pop(b"meta", None)  # ours adds the error in words
    assert ours == rq_own
    assert ours["status"] == (JobStatus.FINISHED if symbol == "AAPL" else JobStatus.FAILED)
    assert ours["result"][0] == (Result.Type.SUCCESSFUL if symbol == "AAPL" else Result.Type.FAILED)


def hand_the_turns_to_the_queue(app) -> None:
    """Move clients' staged jobs to their queue's own list: RQ's own worker knows nothing of turns."""
    for staged in staged_queues(app.redis, app.interactive_queue):
        for job_id in staged.get_job_ids():
            app.interactive_queue.push_job_id(job_id)
        app.redis.delete(staged.key)
    app.redis.delete(fair_key(app.interactive_queue.name))


def test_a_suspended_fleet_takes_no_job_until_resumed(app, client, redis_server, start_workers):
    """`rq suspend` is honoured (checked once a second, not before every job)."""
    start_workers(redis_server.url, 1, PRICE_SOURCE="synthetic")
    suspend(app.redis)
    wait_until(lambda: [w.get_state() for w in Worker.all(connection=app.redis)] == ["suspended"],
               what="the worker to see the suspension")
    url = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json["status_url"]
    assert client.get(url).json["state"] == "queued"
    resume(app.redis)
    wait_until(lambda: client.get(url).json["state"] == "finished", what="the job to run once resumed")


def test_a_jobs_outcome_and_the_take_of_the_next_job_are_one_round_trip(app, client, monkeypatch):
    """Per job, a worker makes two scripted round trips: register the attempt, then write its outcome and take the next."""
    created = client.post("/api/analyses", json={"symbols": ["A", "B", "C", "D", "E"]}).json
    calls = {"take": 0, "guarded": 0}

    def counted(name: str, script):
        def call(keys: list, args: list | None = None):
            calls[name] += 1
            return script(keys=keys, args=args)
        return call

    worker = worker_of(app)
    worker._take, worker._guarded = counted("take", worker._take), counted("guarded", worker._guarded)
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    worker.work(burst=True, logging_level="WARNING")
    assert client.get(created["status_url"]).json["state"] == "finished"
    assert calls == {"take": 2, "guarded": 10}, "one take before the first job, one finding the queue empty after the last"


def test_a_worker_that_stops_after_an_outcome_gives_back_the_next_job_it_took(app, client, run_jobs):
    created = client.post("/api/analyses", json={"symbols": ["FIRST", "NEXT"]}).json
    run_jobs(app, max_jobs=1)  # the first outcome's write takes NEXT; the worker then stops (--max-jobs)
    first, following = analysis_jobs(app.redis, created["id"])
    assert first.get_status() == JobStatus.FINISHED
    assert following.get_status() == JobStatus.QUEUED and waiting_job_ids(app.redis, app.interactive_queue) == [following.id]
    held = [key for key in app.redis.keys(inflight_key("*")) if app.redis.type(key) == b"list"]
    assert not held, "nothing left in a worker's in-flight list"
    run_jobs(app)
    assert client.get(created["status_url"]).json["state"] == "finished"


def test_a_suspension_set_while_a_job_runs_leaves_the_next_job_in_its_queue(app, client, redis_server, start_workers):
    """The outcome's write takes no next job once `rq suspend` is set: it waits in its queue, where operators see it."""
    start_workers(redis_server.url, 1, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=1500)
    created = client.post("/api/analyses", json={"symbols": ["FIRST", "NEXT"]}).json
    first, following = analysis_jobs(app.redis, created["id"])
    wait_until(lambda: first.get_status() == JobStatus.STARTED, what="the first job to start")
    suspend(app.redis)
    wait_until(lambda: [w.get_state() for w in Worker.all(connection=app.redis)] == ["suspended"],
               timeout=15, what="the worker to finish its job and see the suspension")
    assert first.get_status() == JobStatus.FINISHED
    assert waiting_job_ids(app.redis, app.interactive_queue) == [following.id] and following.get_status() == JobStatus.QUEUED
    resume(app.redis)
    wait_until(lambda: client.get(created["status_url"]).json["state"] == "finished", timeout=15,
               what="the next job to run once resumed")


def test_no_job_is_taken_with_an_outcome_once_rq_suspend_is_set(app, client, monkeypatch):
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    client.post("/api/analyses", json={"symbols": ["FIRST", "NEXT"]})
    worker = worker_of(app)
    write, outcomes = worker._guarded, []

    def suspend_then_write(keys: list, args: list):
        if args[2] == "zset":  # the first outcome: `rq suspend` lands just before it is written
            suspend(app.redis)
            outcomes.append(write(keys=keys, args=args))
            return outcomes[-1]
        return write(keys=keys, args=args)

    worker._guarded = suspend_then_write
    worker.work(burst=True, logging_level="WARNING")
    assert outcomes[0] == [1, None], "written, and nothing taken with it"  # (the idle take checks once a second)


def test_a_job_held_when_the_fleet_is_suspended_goes_back_to_its_queue(app, client, monkeypatch):
    """`rq suspend` set just after an outcome's write took the next job: that job waits in its queue, seen and deletable."""
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource(latency_ms=1200))  # past the once-a-second check
    created = client.post("/api/analyses", json={"symbols": ["FIRST", "NEXT"]}).json
    first, following = analysis_jobs(app.redis, created["id"])
    worker = worker_of(app)
    write = worker._guarded

    def write_then_suspend(keys: list, args: list):
        reply = write(keys=keys, args=args)
        if args[2] == "zset":
            suspend(app.redis)
        return reply

    worker._guarded = write_then_suspend
    seen = {}

    def look_then_stop() -> None:
        wait_until(lambda: worker.get_state() == "suspended", timeout=15, what="the worker to see the suspension")
        seen["queue"] = waiting_job_ids(app.redis, app.interactive_queue)
        os.kill(os.getpid(), signal.SIGTERM)

    looker = threading.Thread(target=look_then_stop)
    looker.start()
    run_until_stopped(worker)
    looker.join()
    resume(app.redis)
    assert first.get_status() == JobStatus.FINISHED
    assert seen["queue"] == [following.id], "back in its queue while the fleet was suspended"


def test_a_worker_is_listed_for_recovery_by_the_step_that_takes_a_job(app, client):
    """A worker back from a pause may take before it beats: if it then dies, its job must still be recovered."""
    client.post("/api/analyses", json={"symbols": ["AAPL"]})
    worker = worker_of(app)
    app.redis.srem(INFLIGHT_WORKERS_KEY, worker.name)  # as another worker's recovery leaves a worker it gave up on
    assert worker._take_one(None)
    assert app.redis.sismember(INFLIGHT_WORKERS_KEY, worker.name)


@pytest.mark.parametrize("action", ["delete", "cancel"])
def test_a_job_deleted_or_cancelled_after_a_worker_took_it_is_not_run(app, client, action):
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    worker = worker_of(app)
    job, queue = worker._job_taken(*worker._take_one(None))
    held = analysis_jobs(app.redis, created["id"])[0]
    held.delete() if action == "delete" else held.cancel()  # as rq-dashboard does, while the worker holds it
    worker.execute_job(job, queue)
    assert not job.results()
    assert app.redis.exists(job.key) == (action == "cancel") and not app.redis.lrange(worker.inflight_key, 0, -1)
    if action == "cancel":
        assert job.get_status() == JobStatus.CANCELED


def test_a_sigterm_while_an_outcome_is_written_is_a_warm_stop(app, client, monkeypatch):
    """The job still ends as it should, the worker stops after it, and the next job waits for another worker."""
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    waiting = client.post("/api/analyses", json={"symbols": ["MSFT"]}).json
    worker = worker_of(app)
    write = worker._guarded

    def write_with_a_sigterm(keys: list, args: list) -> int:
        if args[2] == "zset":  # the outcome's write: a deploy's SIGTERM lands during this round trip
            os.kill(os.getpid(), signal.SIGTERM)
        return write(keys=keys, args=args)

    worker._guarded = write_with_a_sigterm
    run_until_stopped(worker)
    job = analysis_jobs(app.redis, created["id"])[0]
    assert job.get_status() == JobStatus.FINISHED and [r.type for r in job.results()] == [Result.Type.SUCCESSFUL]
    assert "error" not in job.meta and worker.failed_job_count == 0
    assert analysis_jobs(app.redis, waiting["id"])[0].get_status() == JobStatus.QUEUED


def test_a_sigterm_while_an_idle_worker_reads_the_job_it_took_gives_the_job_back(app, client, run_jobs, monkeypatch):
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    restore = TrendsJob.restore

    def restore_with_a_sigterm(job: TrendsJob, raw: dict) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        restore(job, raw)

    monkeypatch.setattr(TrendsJob, "restore", restore_with_a_sigterm)
    run_until_stopped(worker_of(app))
    monkeypatch.setattr(TrendsJob, "restore", restore)
    job = analysis_jobs(app.redis, created["id"])[0]
    assert job.id in waiting_job_ids(app.redis, app.interactive_queue), "back in its queue, not lost"
    run_jobs(app)
    assert client.get(created["status_url"]).json["state"] == "finished"


def run_until_stopped(worker: TrendsWorker) -> None:
    """Run a (non-burst) worker until a signal stops it; a second SIGTERM after 15 s (a cold stop) if none did."""
    backstop = threading.Timer(15, os.kill, (os.getpid(), signal.SIGTERM))
    backstop.start()
    try:
        worker.work(burst=False, logging_level="WARNING")
    finally:
        backstop.cancel()


def test_json_without_infinity_is_written_and_rqs_own_is_still_read():
    assert SERIALIZER.loads(SERIALIZER.dumps({"mape": [1.5, float("inf")], 3: "x"})) == {"mape": [1.5, None], "3": "x"}
    assert SERIALIZER.loads(JSONSerializer.dumps({"mape": [float("inf")]})) == {"mape": [float("inf")]}


class DeferringSource(SyntheticSource):
    """A source whose egress has no Yahoo call to spare: every fetch is deferred (after a 429, if `cooling`)."""

    def __init__(self, cooling: bool = False):
        super().__init__()
        self.cooling = cooling
        self.calls = 0

    def history(self, symbol):
        self.calls += 1
        raise PutBack(30, "egress x has no Yahoo call to spare for 30.0 s; back in the queue", self.cooling)


def test_a_deferred_job_goes_back_to_the_front_of_its_queue_untouched_and_runs_later(app, client, run_jobs, monkeypatch):
    first = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    second = client.post("/api/analyses", json={"symbols": ["MSFT"]}).json
    job = analysis_jobs(app.redis, first["id"])[0]
    retries, enqueued_at = job.retries_left, job.enqueued_at
    monkeypatch.setattr(tasks, "_price_source", source := DeferringSource())
    worker = worker_of(app)
    worker.work(burst=True, logging_level="WARNING")
    assert source.calls == 1, "deferred once: the put-back took neither the job it put back nor another from a paused queue"
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and job.retries_left == retries
    assert job.enqueued_at == enqueued_at, "the queue's age still counts from when it was first queued"
    assert "no Yahoo call to spare" in job.meta["waiting_for_yahoo"]
    assert waiting_job_ids(app.redis, app.interactive_queue)[0] == job.id, "back at the front, ahead of MSFT"
    assert len(job.get_executions()) == 0 and job.latest_result() is None
    other = analysis_jobs(app.redis, second["id"])[0]
    assert waiting_job_ids(app.redis, app.interactive_queue) == [job.id, other.id]
    assert other.get_status() == JobStatus.QUEUED and not other.get_executions(), \
        "the worker left the queue after the deferral instead of deferring MSFT too"
    assert app.redis.hgetall(JOB_STATS_KEY) == {}, "a deferral is not an outcome"
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())  # the egress has calls again
    run_jobs(app)
    for created in (first, second):
        assert client.get(created["status_url"]).json["state"] == "finished"
    assert app.redis.hget(JOB_STATS_KEY, f"{app.interactive_queue.name}:ok") == b"2"


def test_a_job_held_back_by_429s_longer_than_allowed_fails_as_rate_limited(app, client, monkeypatch):
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    monkeypatch.setattr(tasks, "_price_source", DeferringSource(cooling=True))
    worker = worker_of(app, give_up_after=30)
    worker.work(burst=True, logging_level="WARNING")
    job = analysis_jobs(app.redis, created["id"])[0]
    assert job.get_status() == JobStatus.QUEUED, "deferred while within give_up_after"
    job.meta["rate_limited_since"] -= 31  # as if its first 429 came 31 s ago
    job.save_meta()
    worker = worker_of(app, give_up_after=30)
    worker.work(burst=True, logging_level="WARNING")
    entry = client.get(created["status_url"]).json["symbols"][0]
    assert entry["state"] == "error" and "refused this fleet's calls (HTTP 429)" in entry["result"]["error"]
    assert app.redis.hget(JOB_STATS_KEY, f"{app.interactive_queue.name}:rate_limited") == b"1"


def test_what_rqs_loop_asks_of_redis_between_jobs_does_not_end_the_worker_while_redis_is_away(tmp_path, caplog):
    # RQ's work loop beats, checks for `rq suspend` and runs maintenance between jobs, outside our retries, and
    # quits on a Redis error there: a short Redis restart between two jobs cost the worker (and a restart).
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    connection = Redis.from_url(server.url, socket_connect_timeout=1)
    queues = trends_queues(connection, {"INTERACTIVE_QUEUE": "trends", "BULK_QUEUE": "trends-bulk"})
    worker = TrendsWorker(queues, connection=connection, serializer=SERIALIZER, lost_after=3, source="synthetic",
                          give_up_after=600)
    server.stop()
    worker.heartbeat(timeout=60)  # as RQ's loop beats after a job
    worker.check_for_suspension(burst=False)
    worker.run_maintenance_tasks()
    skipped = [record.getMessage() for record in caplog.records if "Redis unavailable" in record.getMessage()]
    assert [message.split(": ")[1] for message in skipped] == ["heartbeat skipped", "the rq suspend check skipped",
                                                               "maintenance skipped"]


def ask_once_it_waits(app, client, worker: TrendsWorker, symbols: list[str]) -> list:
    """Run `worker` for one job, with a minute between its looks for work, asking for `symbols` once it blocks.

    Gives the analysis's jobs. Only a wake by the ask can start the job before the 15 s backstop.
    """
    created = {}

    def ask() -> None:
        wait_until(lambda: app.redis.info("clients")["blocked_clients"] == 1, what="the idle worker to block")
        created.update(client.post("/api/analyses", json={"symbols": symbols}).json)

    asker = threading.Thread(target=ask)
    asker.start()
    backstop = threading.Timer(15, os.kill, (os.getpid(), signal.SIGTERM))  # a look a minute away would meet this
    backstop.start()
    try:
        assert worker.work(max_jobs=1, logging_level="WARNING")
    finally:
        backstop.cancel()
        asker.join()
    return analysis_jobs(app.redis, created["id"])


def test_an_idle_worker_starts_a_bulk_job_when_it_is_queued_not_at_its_next_look(app, client, monkeypatch):
    """The fleet's doorbell, not a poll: with a minute between an idle worker's looks, a bulk job still starts at once."""
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    monkeypatch.setattr(fenced_worker, "IDLE_WAIT", 60)
    first = ask_once_it_waits(app, client, worker_of(app), [f"BULK{n}" for n in range(app.config["BULK_THRESHOLD"] + 1)])[0]
    assert first.origin == app.bulk_queue.name and first.get_status() == JobStatus.FINISHED


def test_a_worker_whose_bulk_queue_is_paused_still_takes_an_interactive_job_at_once(app, client, monkeypatch):
    """After a deferral pauses its bulk queue, a worker blocks on the interactive queue itself, not a one-second look."""
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())
    monkeypatch.setattr(fenced_worker, "IDLE_WAIT", 60)
    worker = worker_of(app)
    worker._paused_until[app.bulk_queue.name] = time.monotonic() + 3600
    assert ask_once_it_waits(app, client, worker, ["AAPL"])[0].get_status() == JobStatus.FINISHED

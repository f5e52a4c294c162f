"""An analysis: a record in Redis that any web process can answer for, fed by shared RQ jobs.

Concurrent or repeated requests for the same symbol, window, horizon, method and day share one
job (its id is derived from them), and a fresh result is reused without running it again; the
keys and the delivery of results are in jobs/records.py. `/get_trends` and `/api/analyses`
both start analyses here; the first also waits for them.
"""
import datetime as dt
import json
import time
import uuid

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus

from jobs.records import deliver, recent_key, record_key, shared_job_id, subscribers_key
from webapp.validation import TrendsRequest

ANALYZE = "jobs.tasks.analyze_symbol"
ON_SUCCESS = Callback("jobs.tasks.report_success")
ON_FAILURE = Callback("jobs.tasks.report_failure")
SUCCESS_MESSAGE = "Trends and predictions calculated successfully"
WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}
LIVE = WAITING | {JobStatus.STARTED}


def job_ids(record: dict, symbols: list[str]) -> list[str]:
    return [shared_job_id(s, record["window"], record["horizon"], record["method"], record["day"]) for s in symbols]


def start_analysis(redis: Redis, queue: Queue, request: TrendsRequest, settings) -> str:
    """Subscribe to each symbol's shared job: reuse a fresh result, join a live job, or enqueue one."""
    analysis_id = uuid.uuid4().hex
    record = {"symbols": json.dumps(request.symbols), "window": request.window, "horizon": request.horizon,
              "method": request.method, "day": dt.datetime.now(dt.timezone.utc).date().isoformat()}
    ids = job_ids(record, request.symbols)
    recent = _subscribe(redis, analysis_id, record, ids, settings["RESULT_TTL"])
    pending = [(symbol, job_id) for symbol, job_id, hit in zip(request.symbols, ids, recent) if hit is None]
    statuses = _statuses(redis, [job_id for _, job_id in pending])
    pipe = redis.pipeline(transaction=False)
    for symbol, raw in zip(request.symbols, recent):
        if raw is not None:
            deliver(pipe, [analysis_id], symbol, raw, settings["RESULT_TTL"])
    # A live job will deliver to this analysis too; the others are enqueued in the same round trip.
    jobs = [_job_data(symbol, job_id, request, settings) for (symbol, job_id), status in zip(pending, statuses)
            if status not in LIVE]
    if jobs:
        queue.enqueue_many(jobs, pipeline=pipe)
    pipe.execute()
    return analysis_id


def _subscribe(redis: Redis, analysis_id: str, record: dict, ids: list[str], ttl: int) -> list[bytes | None]:
    """Store the record and subscribe to the jobs; return their fresh results (None where there is none).

    One MULTI, atomic with the jobs' publish script (see jobs/records.py).
    """
    pipe = redis.pipeline(transaction=True)
    pipe.hset(record_key(analysis_id), mapping=record)
    pipe.expire(record_key(analysis_id), ttl)
    for job_id in ids:
        pipe.sadd(subscribers_key(job_id), analysis_id)
        pipe.expire(subscribers_key(job_id), ttl)
    pipe.mget([recent_key(job_id) for job_id in ids])
    return pipe.execute()[-1]


def _job_data(symbol: str, job_id: str, request: TrendsRequest, settings):
    retries = settings["JOB_RETRIES"]
    return Queue.prepare_data(
        ANALYZE,
        args=(symbol, request.window, request.horizon, request.method),
        job_id=job_id,
        timeout=settings["JOB_TIMEOUT"],
        result_ttl=settings["RESULT_TTL"],
        failure_ttl=settings["RESULT_TTL"],
        meta={"ttl": settings["RESULT_TTL"], "reuse": settings["RESULT_CACHE_TTL"]},
        on_success=ON_SUCCESS,
        on_failure=ON_FAILURE,
        # A job that raised, or whose worker died (RQ's abandoned-job handling), is queued again at
        # once. Not after an interval: that needs RQ's scheduler, and if the worker holding the
        # scheduler lock is the one that died, others take over only after 60-120 s.
        retry=Retry(max=retries) if retries else None,
    )


def _statuses(redis: Redis, ids: list[str]) -> list[JobStatus | None]:
    """Each job's RQ status, in one round trip (None for no such job)."""
    pipe = redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(Job.key_for(job_id), "status")
    return [JobStatus(raw.decode()) if raw else None for raw in pipe.execute()]


def wait_for_analysis(redis: Redis, analysis_id: str, symbols: list[str], timeout: float) -> dict:
    """Block until every symbol has a result or `timeout` passed; return the /get_trends body."""
    key = record_key(analysis_id)
    deadline = time.monotonic() + timeout
    while redis.hlen(f"{key}:results") < len(symbols):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Woken by each delivery; short slices keep the socket timeout small and the deadline exact.
        if redis.blpop([f"{key}:done"], timeout=min(remaining, 1.0)):
            redis.delete(f"{key}:done")  # one wake-up per batch of deliveries is enough
    stored = redis.hmget(f"{key}:results", symbols)
    timed_out = f"no worker finished this symbol within {timeout:g} s; are workers running?"
    results = [json.loads(raw) if raw else _error(symbol, timed_out) for symbol, raw in zip(symbols, stored)]
    return response_body(results)


def analysis_status(redis: Redis, analysis_id: str, serializer) -> dict | None:
    """Overall state, counts and per-symbol states and results; None if unknown or expired."""
    key = record_key(analysis_id)
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.hgetall(f"{key}:results")
    raw_record, stored = pipe.execute()
    if not raw_record:
        return None
    record = {k.decode(): v.decode() for k, v in raw_record.items()}
    symbols = json.loads(record["symbols"])
    results = {symbol.decode(): json.loads(raw) for symbol, raw in stored.items()}
    pending = [symbol for symbol in symbols if symbol not in results]
    pending_ids = dict(zip(pending, job_ids(record, pending)))
    statuses = dict(zip(pending, _statuses(redis, list(pending_ids.values()))))  # the status only: polled often
    entries = []
    for symbol in symbols:
        if symbol in results:
            result = results[symbol]
            entries.append({"symbol": symbol, "state": "error" if "error" in result else "done", "result": result})
        else:
            entries.append(_pending_entry(redis, serializer, symbol, pending_ids[symbol], statuses[symbol]))
    return {
        "id": analysis_id,
        "state": _overall_state([entry["state"] for entry in entries]),
        "done": sum(entry["state"] in ("done", "error") for entry in entries),
        "total": len(symbols),
        "window": int(record["window"]),
        "horizon": int(record["horizon"]),
        "method": record["method"],
        "symbols": entries,
    }


def _pending_entry(redis: Redis, serializer, symbol: str, job_id: str, status: JobStatus | None) -> dict:
    """The state of a symbol without a result, from its RQ job's status."""
    if status is None:
        lost = _error(symbol, "its job is gone from the queue (expired or deleted) before it answered")
        return {"symbol": symbol, "state": "error", "result": lost}
    if status in WAITING:
        return {"symbol": symbol, "state": "queued"}
    if status == JobStatus.STARTED:
        return {"symbol": symbol, "state": "running"}
    if status == JobStatus.FINISHED:  # its callback could not store the result; RQ kept it too
        outcome = Job.fetch(job_id, connection=redis, serializer=serializer).return_value(refresh=True)
        result = json.loads(outcome["result"]) if outcome else _error(symbol, "its job finished without a result")
        return {"symbol": symbol, "state": "error" if "error" in result else "done", "result": result}
    stopped = _error(symbol, f"its job ended as {status.value} without a result (for example, its worker died)")
    return {"symbol": symbol, "state": "error", "result": stopped}


def _overall_state(states: list[str]) -> str:
    if all(state == "queued" for state in states):
        return "queued"
    if any(state in ("queued", "running") for state in states):
        return "running"
    if all(state == "done" for state in states):
        return "finished"
    return "failed" if all(state == "error" for state in states) else "partial"


def _error(symbol: str, reason: str) -> dict:
    return {"symbol": symbol, "error": f"{symbol}: {reason}"}


def response_body(results: list[dict]) -> dict:
    """Top-level status and message for per-symbol results, as the API contract words them."""
    failed = [r["symbol"] for r in results if "error" in r]
    if not failed:
        return {"results": results, "status": "success", "message": SUCCESS_MESSAGE}
    if len(failed) == len(results):
        return {"results": results, "status": "error", "message": "No symbol could be analysed; each result's error says why"}
    return {
        "results": results,
        "status": "partial",
        "message": f"{len(failed)} of {len(results)} symbols failed ({', '.join(failed)}); each result's error says why",
    }

"""An analysis: one RQ job per symbol, and a record in Redis that any web process can answer for.

Keys of analysis ID (all expire after RESULT_TTL):
- `analysis:ID`          hash: symbols (JSON list), window, horizon
- `analysis:ID:results`  hash: symbol → result JSON, written by the jobs' callbacks
- `analysis:ID:done`     list: one entry per finished symbol, so a waiter can block (BLPOP)
The job of the i-th symbol has the id `ID-i`, so job states are found without storing a map.
`/get_trends` and `/api/analyses` both start analyses here; the first also waits for them.
"""
import json
import time
import uuid

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus

from webapp.validation import TrendsRequest

ANALYZE = "jobs.tasks.analyze_symbol"
ON_SUCCESS = Callback("jobs.tasks.report_success")
ON_FAILURE = Callback("jobs.tasks.report_failure")
SUCCESS_MESSAGE = "Trends and predictions calculated successfully"
WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}


def record_key(analysis_id: str) -> str:
    return f"analysis:{analysis_id}"


def job_id(analysis_id: str, index: int) -> str:
    return f"{analysis_id}-{index}"


def start_analysis(redis: Redis, queue: Queue, request: TrendsRequest, settings) -> str:
    """Store the record and enqueue every job in one round trip; return the analysis id."""
    analysis_id = uuid.uuid4().hex
    ttl = settings["RESULT_TTL"]
    retries = settings["JOB_RETRIES"]
    # A job that raised, or whose worker died (RQ's abandoned-job handling), is queued again at
    # once. Not after an interval: that needs RQ's scheduler, and if the worker holding the
    # scheduler lock is the one that died, others take over only after 60-120 s.
    retry = Retry(max=retries) if retries else None
    jobs = [
        Queue.prepare_data(
            ANALYZE,
            args=(symbol, request.window, request.horizon),
            job_id=job_id(analysis_id, index),
            timeout=settings["JOB_TIMEOUT"],
            result_ttl=ttl,
            failure_ttl=ttl,
            meta={"analysis": analysis_id, "ttl": ttl},
            on_success=ON_SUCCESS,
            on_failure=ON_FAILURE,
            retry=retry,
        )
        for index, symbol in enumerate(request.symbols)
    ]
    pipe = redis.pipeline()
    key = record_key(analysis_id)
    pipe.hset(key, mapping={"symbols": json.dumps(request.symbols), "window": request.window, "horizon": request.horizon})
    pipe.expire(key, ttl)
    queue.enqueue_many(jobs, pipeline=pipe)
    pipe.execute()
    return analysis_id


def wait_for_analysis(redis: Redis, analysis_id: str, symbols: list[str], timeout: float) -> dict:
    """Block until every symbol has a result or `timeout` passed; return the /get_trends body."""
    done_key = f"{record_key(analysis_id)}:done"
    deadline = time.monotonic() + timeout
    finished = 0
    while finished < len(symbols):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Short blocking slices keep the socket timeout small and the deadline exact.
        if redis.blpop([done_key], timeout=min(remaining, 1.0)) is None:
            continue
        finished += 1 + len(redis.lpop(done_key, len(symbols)) or [])
    stored = redis.hmget(f"{record_key(analysis_id)}:results", symbols)
    timed_out = f"no worker finished this symbol within {timeout:g} s; are workers running?"
    results = [json.loads(raw) if raw else _error(symbol, timed_out) for symbol, raw in zip(symbols, stored)]
    return response_body(results)


def analysis_status(redis: Redis, analysis_id: str, serializer) -> dict | None:
    """Overall state, counts and per-symbol states and results; None if unknown or expired."""
    key = record_key(analysis_id)
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.hgetall(f"{key}:results")
    record, stored = pipe.execute()
    if not record:
        return None
    symbols = json.loads(record[b"symbols"])
    results = {symbol.decode(): json.loads(raw) for symbol, raw in stored.items()}
    pending = [i for i, symbol in enumerate(symbols) if symbol not in results]
    jobs = Job.fetch_many([job_id(analysis_id, i) for i in pending], connection=redis, serializer=serializer)
    entries = []
    job_of = dict(zip(pending, jobs))
    for index, symbol in enumerate(symbols):
        if symbol in results:
            result = results[symbol]
            entries.append({"symbol": symbol, "state": "error" if "error" in result else "done", "result": result})
        else:
            entries.append(_pending_entry(symbol, job_of[index]))
    return {
        "id": analysis_id,
        "state": _overall_state([entry["state"] for entry in entries]),
        "done": sum(entry["state"] in ("done", "error") for entry in entries),
        "total": len(symbols),
        "window": int(record[b"window"]),
        "horizon": int(record[b"horizon"]),
        "symbols": entries,
    }


def _pending_entry(symbol: str, job: Job | None) -> dict:
    """The state of a symbol without a result, from its RQ job."""
    if job is None:
        lost = _error(symbol, "its job is gone from the queue (expired or deleted) before it answered")
        return {"symbol": symbol, "state": "error", "result": lost}
    status = job.get_status(refresh=False)
    if status in WAITING:
        return {"symbol": symbol, "state": "queued"}
    if status == JobStatus.STARTED:
        return {"symbol": symbol, "state": "running"}
    if status == JobStatus.FINISHED:  # its callback could not store the result; RQ kept it too
        result = job.return_value(refresh=True) or _error(symbol, "its job finished without a result")
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

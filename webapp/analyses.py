"""Analyses: what a request asked and which shared jobs answer it; every state and result is read from RQ.

`/get_trends` claims its jobs and blocks on their result streams. `/api/analyses` keeps a small
record (symbols, parameters, day, job ids) so any web process can answer for it later; the
keeper keeps an analysis and the results it has so far readable until `RESULT_TTL` after its
last symbol is answered, however long its jobs waited in the queue.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask
from redis import Redis
from redis.exceptions import OutOfMemoryError, RedisError
from rq import Queue
from rq.job import Job, JobStatus
from rq.results import Result

from jobs.connection import confirmed, replicas_behind, replicated
from jobs.job_class import SERIALIZER
from jobs.records import DEFAULT_LEVEL, OPEN_ANALYSES_KEY, record_key, trading_day
from webapp.shared_jobs import (
    LIVE,
    claim_jobs,
    error_object,
    job_statuses,
    result_objects,
    snapshot,
    wait_for_outcomes,
    work_ids,
)
from webapp.validation import TrendsRequest

log = logging.getLogger(__name__)

SUCCESS_MESSAGE = "Trends and predictions calculated successfully"
KEEPER_LOCK_KEY = "trends:keeper:lock"
WAITING = LIVE - {JobStatus.STARTED}
ANALYSIS_ID_PATTERN = r"[0-9a-f]{32}"  # uuid4().hex, as start_analysis makes them
ENDED_STATES = ("finished", "partial", "failed")  # an analysis in one of these changes no more
ANALYSIS_STATES = ("queued", "running", *ENDED_STATES)


def get_trends(redis: Redis, queue: Queue, client: str, request: TrendsRequest, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Claim a shared job per symbol (new ones in `client`'s turn), wait up to TRENDS_TIMEOUT, and give the /get_trends body."""
    ids = claim_jobs(redis, queue, request, work_ids(request, trading_day(), settings["PRICE_SOURCE"]), settings, client)
    timeout = settings["TRENDS_TIMEOUT"]
    objects = result_objects(redis, request.symbols, ids, wait_for_outcomes(redis, ids, timeout))
    late = [(symbol, job_id) for symbol, job_id in zip(request.symbols, ids) if job_id not in objects]
    jobs = dict(zip([job_id for _, job_id in late], Job.fetch_many([job_id for _, job_id in late], redis,
                                                                     serializer=SERIALIZER)))
    for symbol, job_id in late:
        objects[job_id] = error_object(symbol, _late_reason(jobs[job_id], timeout), "late")
    confirmed(redis.pipeline(transaction=False), replicas_behind(redis))  # in a group: on a replica
    return response_body([objects[job_id] for job_id in ids])


def _late_reason(job: Job | None, timeout: float) -> str:
    status = job.get_status(refresh=False) if job else None
    if status in WAITING and job.meta.get("waiting_for_yahoo"):  # put back by a worker: the price source's budget
        return f"not fetched within {timeout:g} s: {job.meta['waiting_for_yahoo']}; ask again in a minute"
    if status in WAITING:
        return f"no worker took this symbol within {timeout:g} s; are workers running, or is the queue long?"
    if status == JobStatus.STARTED:
        return f"its job was still running after {timeout:g} s"
    return f"its job ended without an answer within {timeout:g} s"


def start_analysis(redis: Redis, queue: Queue, client: str, request: TrendsRequest, settings: Mapping[str, Any]) -> str:
    """Claim the jobs (new ones in `client`'s turn) and keep a record of what was asked; answer with the analysis id."""
    day = trading_day()
    ids = claim_jobs(redis, queue, request, work_ids(request, day, settings["PRICE_SOURCE"]), settings, client)
    analysis_id = uuid.uuid4().hex
    record = {"symbols": json.dumps(request.symbols), "window": request.window, "horizon": request.horizon,
              "method": request.method, "level": request.level, "day": day, "jobs": json.dumps(ids),
              "source": settings["PRICE_SOURCE"]}
    pipe = redis.pipeline(transaction=False)  # in this order: the keeper finds no open analysis without its record
    pipe.hset(record_key(analysis_id), mapping=record)
    pipe.expire(record_key(analysis_id), settings["RESULT_TTL"])  # the keeper extends it while it is open
    pipe.zadd(OPEN_ANALYSES_KEY, {analysis_id: time.time()})
    replicated(pipe, replicas_behind(redis))  # in a Sentinel group: no 202 a failover undoes
    return analysis_id


class OtherSourceError(LookupError):
    """An analysis made with another price source than this deployment's."""

    def __init__(self) -> None:
        super().__init__("it was made with another price source than this deployment's (make demo's, on the same "
                         "Redis?); ask again for numbers from this one")


class CursorError(ValueError):
    """A `since` cursor that this analysis did not give."""

    def __init__(self) -> None:
        super().__init__("since must be the cursor an earlier answer for this analysis gave (or left out)")


def read_cursor(since: str, total: int) -> frozenset[int]:
    """Decode a `since` cursor: the positions of the symbols whose ended results the reader already has.

    The cursor is a bitmap (bit i: symbol i), base64url without padding, as `analysis_status` gives it.
    """
    if not since:
        return frozenset()
    if not re.fullmatch(r"[A-Za-z0-9_-]+", since) or len(since) > 4 * ((total + 7) // 8 + 2) // 3:
        raise CursorError()
    try:
        bitmap = int.from_bytes(base64.urlsafe_b64decode(since + "=" * (-len(since) % 4)), "little")
    except ValueError:
        raise CursorError() from None
    if bitmap >> total:  # a symbol past the analysis's own: not a cursor it gave
        raise CursorError()
    return frozenset(position for position in range(total) if bitmap >> position & 1)


def write_cursor(positions: list[int]) -> str:
    """Encode the positions of ended symbols as a `since` cursor for the next poll."""
    bitmap = sum(1 << position for position in positions)
    return base64.urlsafe_b64encode(bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "little")).decode().rstrip("=")


def analysis_status(redis: Redis, analysis_id: str, since: str = "", source: str = "") -> dict[str, Any] | None:
    """Overall state, counts and per-symbol states and results, read from the jobs; None if unknown or expired.

    With the `since` cursor of an earlier answer, the results that answer carried are left out (their
    symbols keep their state): a poll carries only what is new. Raises CursorError for a cursor it did not give.
    In a Sentinel group, new results are on a replica before they are told (no failover undoes them).
    `source`: the deployment's price source; an analysis made with another (`make demo`'s, on the same
    Redis) raises OtherSourceError, so no number from another source is shown as this one's.
    """
    raw = redis.hgetall(record_key(analysis_id))
    if not raw:
        return None
    record = {k.decode(): v.decode() for k, v in raw.items()}
    if source and record.get("source", source) != source:  # records from before this check name none
        raise OtherSourceError()
    symbols, ids = json.loads(record["symbols"]), json.loads(record["jobs"])
    known = read_cursor(since, len(symbols))
    statuses, outcomes = snapshot(redis, ids, known)
    if any(statuses[position] in LIVE for position in known):  # a symbol not answered yet cannot be known
        raise CursorError()
    objects = result_objects(redis, symbols, ids, outcomes)
    entries = [_known_entry(symbol, status) if position in known else _entry(symbol, status, objects.get(job_id))
               for position, (symbol, job_id, status) in enumerate(zip(symbols, ids, statuses))]
    ended = [position for position, entry in enumerate(entries) if entry["state"] in ("done", "error")]
    return {
        "id": analysis_id,
        "state": _overall_state([entry["state"] for entry in entries]),
        "done": sum(entry["state"] in ("done", "error") for entry in entries),
        "total": len(symbols),
        "window": int(record["window"]),
        "horizon": int(record["horizon"]),
        "method": record["method"],
        "level": float(record.get("level", DEFAULT_LEVEL)),  # records older than 0.8.0 have none
        "symbols": entries,
        "cursor": write_cursor(ended),
    }


def _known_entry(symbol: str, status: JobStatus | None) -> dict[str, Any]:
    """Give the state of a symbol whose result the reader has already (its job's status says which end it had)."""
    return {"symbol": symbol, "state": "done" if status == JobStatus.FINISHED else "error"}


def _entry(symbol: str, status: JobStatus | None, result: dict[str, Any] | orjson.Fragment | None) -> dict[str, Any]:
    if status in WAITING:
        return {"symbol": symbol, "state": "queued"}
    if status == JobStatus.STARTED:
        return {"symbol": symbol, "state": "running"}
    if result is None:
        result = error_object(symbol, "its job and result are gone (expired or deleted) before it was read", "expired")
    return {"symbol": symbol, "state": "error" if is_error(result) else "done", "result": result}


def _overall_state(states: list[str]) -> str:
    if all(state == "queued" for state in states):
        return "queued"
    if any(state in ("queued", "running") for state in states):
        return "running"
    if all(state == "done" for state in states):
        return "finished"
    return "failed" if all(state == "error" for state in states) else "partial"


def is_error(result: dict[str, Any] | orjson.Fragment) -> bool:
    """Whether a symbol's result object is its error (error_object): a result as stored is a fragment, or decoded."""
    return isinstance(result, dict) and "error" in result


def response_body(results: list[dict[str, Any] | orjson.Fragment]) -> dict[str, Any]:
    """Top-level status and message for per-symbol results, as the API contract words them."""
    failed = [r["symbol"] for r in results if is_error(r)]
    if not failed:
        return {"results": results, "status": "success", "message": SUCCESS_MESSAGE}
    if len(failed) == len(results):
        return {"results": results, "status": "error", "message": "No symbol could be analysed; each result's error says why"}
    return {
        "results": results,
        "status": "partial",
        "message": f"{len(failed)} of {len(results)} symbols failed ({', '.join(failed)}); each result's error says why",
    }


def keep_analyses(redis: Redis, ttl: int) -> int:
    """Keep each open analysis and its results so far readable for `ttl` s more; close the answered ones.

    An analysis is answered when none of its jobs is live; from then on its record and results
    expire `ttl` s later. Returns how many analyses are still open.
    """
    open_ids = [raw.decode() for raw in redis.zrange(OPEN_ANALYSES_KEY, 0, -1)]
    pipe = redis.pipeline(transaction=False)
    for analysis_id in open_ids:
        pipe.hget(record_key(analysis_id), "jobs")
    jobs_of = {a: json.loads(raw) if raw else None for a, raw in zip(open_ids, pipe.execute())}
    all_ids = sorted({job_id for ids in jobs_of.values() if ids for job_id in ids})
    live = {job_id for job_id, status in zip(all_ids, job_statuses(redis, all_ids)) if status in LIVE}
    still_open = 0
    for analysis_id, ids in jobs_of.items():
        if ids is None:  # its record expired (no keeper ran for RESULT_TTL): nothing left to keep
            pipe.zrem(OPEN_ANALYSES_KEY, analysis_id)
            continue
        for job_id in set(ids) - live:  # GT: never shortens, and leaves live jobs' keys (no expiry) alone
            pipe.expire(Job.key_for(job_id), ttl, gt=True)
            pipe.expire(Result.get_key(job_id), ttl, gt=True)
        pipe.expire(record_key(analysis_id), ttl)
        if live.isdisjoint(ids):
            pipe.zrem(OPEN_ANALYSES_KEY, analysis_id)
        else:
            still_open += 1
    pipe.execute()
    return still_open


def keeper_interval(ttl: int) -> int:
    """Often enough that nothing it keeps expires between two runs."""
    return max(1, min(ttl // 4, 60))


def keep_once(redis: Redis, ttl: int, interval: int) -> bool:
    """Keep the open analyses if no other web process does this `interval`; say whether this one did.

    A full Redis (maxmemory, noeviction) refuses the lock's write but not the keeper's (expiries and
    removals need no memory): then every process keeps, which is harmless, so an accepted analysis
    stays readable until it is answered, also while Redis is full.
    """
    try:
        if not redis.set(KEEPER_LOCK_KEY, 1, nx=True, ex=interval):
            return False
    except OutOfMemoryError:
        pass
    keep_analyses(redis, ttl)
    return True


def start_keeper(app: Flask) -> threading.Thread:
    """Run keep_once in the background of this web process; one process at a time across the fleet keeps."""
    ttl = app.config["RESULT_TTL"]
    interval = keeper_interval(ttl)

    def keep() -> None:
        while True:
            time.sleep(interval)
            try:
                keep_once(app.redis, ttl, interval)
            except RedisError as exc:
                log.warning("could not keep analyses alive: %s", exc)
            except Exception:  # a record it cannot read must not end the keeper for this process
                log.exception("keeping analyses alive failed")

    thread = threading.Thread(target=keep, name="analysis-keeper", daemon=True)
    thread.start()
    return thread

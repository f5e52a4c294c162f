"""One shared RQ job per (symbol, window, horizon, method, level, day): claimed atomically, waited on, read back.

RQ is the one source of truth: each job's state is its hash (`Job.key_for`), its outcome the
entry its worker adds to the job's result stream (`Result.get_key`). Requests for the same work
share the job that `trends:work:WORK` names: a fresh result is reused, a live job is joined, and
only a missing, stale or failed job is followed by a new one, created with a new id by a script
that first checks the pointer still names what the request saw, so exactly one request creates it
however many arrive at once. Jobs are never deleted or overwritten: whoever still reads an older job's result keeps it
until it expires. Jobs know nothing of the requests waiting for them.
"""
from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis
from redis.commands.core import Script
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.queue import EnqueueData
from rq.results import Result

from jobs.connection import confirmed, replicas_behind, run_script
from jobs.job_class import ANALYZE_SYMBOL, SERIALIZER, OrjsonSerializer
from jobs.records import (
    APPLY_RECORDED,
    DEFAULT_LEVEL,
    DOORBELL_KEY,
    DOORBELL_RINGS,
    FAILURE_REASONS,
    REDIS_UNAVAILABLE,
    current_job_key,
    fair_key,
    recorded,
    rq_time,
    staged_queue_name,
    turns_doorbell_key,
    work_id,
)
from webapp.validation import TrendsRequest

LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}
FINAL_RESULTS = {Result.Type.SUCCESSFUL, Result.Type.FAILED, Result.Type.STOPPED, Result.Type.MAX_RETRIES_EXCEEDED}
FAILURE_REUSE_SECONDS = 10  # a failure is answered again for this long, then the symbol is retried
WAIT_SLICE = 2.0  # seconds per blocking read: below the client's socket timeout
UNAVAILABLE_PAUSE = 0.5  # seconds a wait pauses when Redis is unavailable, before it reads again
READ_BATCH = 100  # result streams read at once while waiting: after the last result, at most this many are left to restore


class StoredJSON(OrjsonSerializer):
    """The project's serializer, reading a stored result as the JSON it already is (an orjson.Fragment) for answers.

    RQ's Result.restore calls `loads`: decoding ~9 KB of floats a symbol only for orjson to encode
    them again cost the web app a third of its time per symbol, and a 1000-symbol answer its last
    tens of milliseconds. A result RQ's JSONSerializer once wrote with NaN or Infinity (not JSON), or
    anything that is not one JSON object at a glance, is decoded (what is not JSON then fails as before).
    """

    @staticmethod
    def loads(data: bytes) -> Any:
        """Give the stored JSON as a fragment an answer embeds as it is."""
        if data[:1] != b"{" or data[-1:] != b"}" or b"NaN" in data or b"Infinity" in data:
            return OrjsonSerializer.loads(data)
        return orjson.Fragment(data)


STORED_JSON = StoredJSON()  # an instance, as jobs.job_class.SERIALIZER is (RQ's protocol check is quicker)


POINTER_TTL = 2 * 24 * 3600  # a work pointer outlives its day and any job it names
FIRST_CHUNK, MAX_CHUNK = 16, 256  # symbols claimed at once: the first few start the workers, later ones cost fewer trips
# For each pointer KEYS[k]: if it still names what the request read (ARGV: '' for none), enqueue the
# job RQ's own code recorded (jobs/records.py `recorded`) and point at it; else leave both alone.
# ARGV: the pointer's TTL, the doorbell's key, the client's staged queue key ('' for none), the queue's
# clients' turns, RQ's set of queues, the queue's key, the turns' doorbell, then per pointer: the id read,
# the new job's id, its command count, its commands. A staged job moves from its queue's tail (where RQ
# put it) to the client's staged queue, and the client gets a turn if it had none, level with the least
# served: workers serve clients in turn (jobs/worker_scripts.py TAKE). Rings the doorbell (and the turns'
# one for staged jobs) once per job created, so idle workers start at once. Returns 1 or 0 per pointer:
# created, or someone else's job is there now.
# What CLAIM_SCRIPT and PROMOTE_SCRIPT share: ring a doorbell (at most DOORBELL_RINGS rings wait), and give a
# client's staged queue a turn if it has none, level with the least served, listed among RQ's queues.
TURNS = """
local function ring(doorbell, times)
  for _ = 1, math.min(times, """ + str(DOORBELL_RINGS) + """) do redis.call('LPUSH', doorbell, 1) end
  if times > 0 then redis.call('LTRIM', doorbell, 0, """ + str(DOORBELL_RINGS - 1) + """) end
end
local function give_turn(turns, staged, queues)
  if not redis.call('ZSCORE', turns, staged) then
    redis.call('ZADD', turns, redis.call('ZRANGE', turns, 0, 0, 'WITHSCORES')[2] or 0, staged)
  end
  redis.call('SADD', queues, staged)
end
"""
CLAIM_SCRIPT = APPLY_RECORDED + TURNS + """
local created, i, rings = {}, 8, 0
local staged, turns = ARGV[3], ARGV[4]
for k = 1, #KEYS do
  local count = tonumber(ARGV[i + 2])
  if (redis.call('GET', KEYS[k]) or '') == ARGV[i] then
    local after = apply(i + 3, count)
    redis.call('SET', KEYS[k], ARGV[i + 1], 'EX', ARGV[1])
    if staged ~= '' and redis.call('LREM', ARGV[6], -1, ARGV[i + 1]) == 1 then
      redis.call('RPUSH', staged, ARGV[i + 1])
    end
    created[k], i, rings = 1, after, rings + 1
  else
    created[k], i = 0, skip(i + 3, count)
  end
end
if staged ~= '' and rings > 0 then
  give_turn(turns, staged, ARGV[5])
  ring(ARGV[7], rings)
end
ring(ARGV[2], rings)
return created
"""


# A request joins jobs that wait in other clients' turns: each still queued there deeper than this client's
# own staged queue is long moves to its tail, so no client's backlog holds back another's request, also for
# shared work; a job nearer the head where it is stays (moving it would only delay it: a flooder asking for
# another's symbols must not pull them behind its own backlog). A job still queued in the bulk queue (a
# large request's: work ids do not name the queue) moves too, and becomes this queue's: bulk waits behind
# every client's turn. ARGV: CLAIM_SCRIPT's five turn keys (ARGV[1..5]: staged queue, turns, RQ's queue
# set, queue, turns' doorbell), RQ's job key prefix, the bulk queue's key, this queue's name, then the job
# ids. Returns how many moved.
PROMOTE_SCRIPT = TURNS + """
local mine, turns, moved = ARGV[1], ARGV[2], 0
for j = 9, #ARGV do
  if redis.call('HGET', ARGV[6] .. ARGV[j], 'status') == 'queued' then
    local in_bulk = redis.call('LREM', ARGV[7], 1, ARGV[j]) == 1
    if in_bulk then
      redis.call('RPUSH', mine, ARGV[j])
      redis.call('HSET', ARGV[6] .. ARGV[j], 'origin', ARGV[8])
      moved = moved + 1
    end
    for _, other in ipairs(in_bulk and {} or redis.call('ZRANGE', turns, 0, -1)) do
      local at = other ~= mine and redis.call('LPOS', other, ARGV[j])
      if at then
        if at > redis.call('LLEN', mine) then
          redis.call('LREM', other, 1, ARGV[j])
          redis.call('RPUSH', mine, ARGV[j])
          moved = moved + 1
        end
        break
      end
    end
  end
end
if moved > 0 then give_turn(turns, mine, ARGV[3]) end
return moved
"""


@dataclass(frozen=True)
class JobState:
    """What a claim needs to know of an existing job (from its RQ hash)."""

    status: JobStatus | None
    ended_at: float | None


def work_ids(request: TrendsRequest, day: str, source: str) -> list[str]:
    """Name each symbol's work for the day, so requests for the same work find the same job."""
    return [work_id(symbol, request.window, request.horizon, request.method, request.level, day, source)
            for symbol in request.symbols]


def claim_jobs(redis: Redis, queue: Queue, request: TrendsRequest, works: list[str], settings: Mapping[str, Any],
               client: str = "") -> list[str]:
    """Find the job answering each work: reused, joined, or created (atomically, with a new id); give their ids in order.

    A long list is claimed in growing chunks, so workers start on the first jobs while the rest are
    recorded (RQ's own code records each job; docs/performance.md measures it). With a `client` (its
    address), new jobs wait in that client's staged queue, served in turn with other clients'.
    """
    claim = redis.register_script(CLAIM_SCRIPT)
    staged = Queue(staged_queue_name(queue.name, client), connection=redis).key if client else ""
    turns = [staged, fair_key(queue.name), queue.redis_queues_keys, queue.key, turns_doorbell_key(queue.name)]
    ids: list[str] = []
    joined: list[str] = []
    start, size = 0, FIRST_CHUNK
    while start < len(works):
        ids += _claim_chunk(redis, claim, queue, request, works, range(start, min(start + size, len(works))), settings,
                            turns, joined)
        start, size = start + size, min(2 * size, MAX_CHUNK)
    if staged and joined:  # another client's queued job this client now waits on too: it waits in this client's turn
        bulk = Queue(settings["BULK_QUEUE"], connection=redis).key
        run_script(redis.register_script(PROMOTE_SCRIPT), [],
                   [*turns, Job.redis_job_namespace_prefix, bulk, queue.name, *joined],
                   replicas_behind(redis))
    return ids


def _claim_chunk(redis: Redis, claim: Script, queue: Queue, request: TrendsRequest, works: list[str], positions: range,
                 settings: Mapping[str, Any], turns: list[str], joined: list[str]) -> list[str]:
    """Claim the works at `positions`; a pointer another request changed meanwhile is read again, and only it.

    Adds to `joined` the live jobs it found (someone else's, not made here).
    """
    found: dict[int, str] = {}  # position → the job that answers it, once settled
    while unsettled := [i for i in positions if i not in found]:
        pointers = {i: current_job_key(works[i]) for i in unsettled}
        read = dict(zip(unsettled, [raw.decode() if raw else None for raw in redis.mget(list(pointers.values()))]))
        to_create = _needing_a_job(redis, read, settings)
        creating = set(to_create)
        found.update({i: job_id for i, job_id in read.items() if i not in creating})
        joined += [job_id for i, job_id in read.items() if job_id and i not in creating]
        if not to_create:
            break
        words: list[object] = [POINTER_TTL, DOORBELL_KEY, *turns]
        new = {i: f"{works[i]}-{uuid.uuid4().hex[:8]}" for i in to_create}
        for i in to_create:
            count, commands = recorded(redis, lambda pipe, i=i: queue.enqueue_many(
                [_job_data(request, i, new[i], settings)], pipeline=pipe))
            words += [read[i] or "", new[i], count, *commands]
        created = run_script(claim, [pointers[i] for i in to_create], words,  # in a Sentinel group: on a replica too
                             replicas_behind(redis))
        found.update({i: new[i] for i, made in zip(to_create, created) if made})
        # Another request created the others first: read their pointers again, and join theirs.
    return [found[i] for i in positions]


def _needing_a_job(redis: Redis, ids: dict[int, str | None], settings: Mapping[str, Any]) -> list[int]:
    """Positions (of `ids`, position → job id read) without a job, or whose job is gone, stale, or failed a while ago."""
    named = [(i, job_id) for i, job_id in ids.items() if job_id]
    states = dict(zip([i for i, _ in named], _states(redis, [job_id for _, job_id in named])))
    now = time.time()
    reuse = {JobStatus.FINISHED: settings["RESULT_CACHE_TTL"],
             JobStatus.FAILED: min(FAILURE_REUSE_SECONDS, settings["RESULT_CACHE_TTL"])}
    needed = []
    for i in ids:
        state = states.get(i)
        if state is None or state.status is None:
            needed.append(i)
        elif state.status not in LIVE and (state.ended_at is None or now - state.ended_at > reuse.get(state.status, 0)):
            needed.append(i)
    return needed


def _states(redis: Redis, ids: list[str]) -> list[JobState]:
    """Status and end time of each job from its RQ hash, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(Job.key_for(job_id), "status", "ended_at")
    return [JobState(JobStatus(status.decode()) if status else None, rq_time(ended) if ended else None)
            for status, ended in pipe.execute()]


def _job_data(request: TrendsRequest, position: int, job_id: str, settings: Mapping[str, Any]) -> EnqueueData:
    retries = settings["JOB_RETRIES"]
    return Queue.prepare_data(
        ANALYZE_SYMBOL,
        # The default level is left out, so a worker from before 0.8.0 (four arguments) still runs it mid-upgrade.
        args=(request.symbols[position], request.window, request.horizon, request.method,
              *((request.level,) if request.level != DEFAULT_LEVEL else ())),
        job_id=job_id,
        timeout=settings["JOB_TIMEOUT"],
        result_ttl=settings["RESULT_TTL"],
        failure_ttl=settings["RESULT_TTL"],
        # A job whose worker died (RQ's abandoned-job handling) is queued again at once, at the front.
        # Not after an interval: that needs RQ's scheduler, which another worker takes over only after 60-120 s.
        retry=Retry(max=retries, enqueue_at_front=True) if retries else None,
    )


def wait_for_outcomes(redis: Redis, ids: list[str], timeout: float) -> dict[str, Result]:
    """Block (no polling) until each job's result stream holds its final outcome, or `timeout` passed.

    Reads from the start of each stream, so outcomes that are already there count. Reads the
    pending jobs a batch at a time, in the order they were queued: blocks on the batch's last
    stream (FIFO queues finish it about last of the batch), then collects the rest of the batch in
    one non-blocking read. So a large request's results are read and restored while the workers
    still run, not all after the last one, with a few reads per batch, not one per symbol. Out of
    time, one last read of every stream still pending collects what ended beyond the batch.
    """
    cursors = {Result.get_key(job_id): "0-0" for job_id in ids}
    job_of = dict(zip(cursors, ids))
    outcomes: dict[str, Result] = {}

    def collect(replies: list) -> None:
        for key, entries in replies:
            key = key.decode()
            if key not in cursors:
                continue
            entry_id, payload = entries[-1]
            cursors[key] = entry_id
            result = Result.restore(job_of[key], entry_id.decode(), payload, connection=redis, serializer=STORED_JSON)
            if result.type in FINAL_RESULTS:  # only the job's current attempt writes one (jobs/fenced_worker.py)
                outcomes[job_of[key]] = result
                del cursors[key]

    deadline = time.monotonic() + timeout
    while cursors and (remaining := deadline - time.monotonic()) > 0:
        batch = list(itertools.islice(cursors, READ_BATCH))
        last = batch.pop()
        try:
            collect(redis.xread({last: cursors[last]}, block=max(1, int(min(remaining, WAIT_SLICE) * 1000))) or [])
            if batch:
                collect(redis.xread({key: cursors[key] for key in batch}) or [])
        except REDIS_UNAVAILABLE:  # a restart or a failover: the jobs go on, so the wait does too, in time
            time.sleep(min(UNAVAILABLE_PAUSE, max(deadline - time.monotonic(), 0)))
            # A failover may have lost what was read from the old primary: read it all again, from the new one.
            outcomes.clear()
            cursors.clear()
            cursors.update({Result.get_key(job_id): "0-0" for job_id in ids})
    if cursors:
        collect(redis.xread(cursors) or [])
    return outcomes


def snapshot(redis: Redis, ids: list[str],
             known: frozenset[int] = frozenset()) -> tuple[list[JobStatus | None], dict[str, Result]]:
    """Read each job's status and, for those that are answered, the final outcome, in one round trip.

    RQ's `get_status` and `latest_result`, batched; no MULTI, which a full Redis refuses even for reads.
    A job is never deleted or reused, so an answered job's result is there until it expires.
    The outcomes of the jobs at the `known` positions (the reader has them already) are not read.
    In a Sentinel group, what is read is on a replica before it is given (`confirmed`).
    """
    wanted = [position for position in range(len(ids)) if position not in known]
    pipe = redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(Job.key_for(job_id), "status")
    for position in wanted:
        pipe.xrevrange(Result.get_key(ids[position]), count=1)
    replies = confirmed(pipe, replicas_behind(redis))
    statuses = [JobStatus(raw.decode()) if raw else None for raw in replies[:len(ids)]]
    outcomes = {}
    for position, entries in zip(wanted, replies[len(ids):]):
        job_id, status = ids[position], statuses[position]
        if entries and status not in LIVE:
            result = Result.restore(job_id, entries[0][0].decode(), entries[0][1], connection=redis, serializer=STORED_JSON)
            if result.type in FINAL_RESULTS:
                outcomes[job_id] = result
    return statuses, outcomes


def job_statuses(redis: Redis, ids: list[str]) -> list[JobStatus | None]:
    """Read each job's status (None once it is gone), in one round trip."""
    return [state.status for state in _states(redis, ids)]


def result_objects(redis: Redis, symbols: list[str], ids: list[str],
                   outcomes: dict[str, Result]) -> dict[str, dict[str, Any] | orjson.Fragment]:
    """Each answered job's result object: its return value as stored (StoredJSON), or its error in words (by job id)."""
    failed = [(symbol, job_id) for symbol, job_id in zip(symbols, ids)
              if job_id in outcomes and outcomes[job_id].type != Result.Type.SUCCESSFUL]
    jobs = dict(zip([job_id for _, job_id in failed], Job.fetch_many([job_id for _, job_id in failed], redis,
                                                                         serializer=SERIALIZER)))
    objects = {}
    for symbol, job_id in zip(symbols, ids):
        outcome = outcomes.get(job_id)
        if outcome is None:
            continue
        if outcome.type == Result.Type.SUCCESSFUL:
            objects[job_id] = outcome.return_value
            continue
        meta = jobs[job_id].meta if jobs.get(job_id) else {}
        message, reason = meta.get("error"), meta.get("reason")  # written by the worker that failed it
        if not message and "AbandonedJobError" in (outcome.exc_string or ""):
            message = f"{symbol}: the worker running this analysis stopped before finishing it, on every attempt"
            reason = "worker_lost"
        objects[job_id] = error_object(symbol, message or "the analysis failed; the worker log has details",
                                       reason if reason in FAILURE_REASONS else "error")
    return objects


def error_object(symbol: str, message: str, reason: str) -> dict[str, str]:
    """Build a symbol's error result: its message starting with the symbol exactly once, and its kind (docs/api.md)."""
    return {"symbol": symbol, "error": message if message.startswith(f"{symbol}: ") else f"{symbol}: {message}",
            "reason": reason}

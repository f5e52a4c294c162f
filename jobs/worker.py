"""The project's RQ worker: jobs run in-process, a busy worker keeps beating, and only a job's current attempt stores its outcome.

RQ's data model is kept as it is (job hashes, result streams, registries), so rq-dashboard and
RQ's own maintenance read it as usual. What changes, and why:
- Taking a job is never a bare pop: the job moves into this worker's in-flight list and is
  registered there, as started, in one transaction. A worker that dies or is paused while idle
  or between pop and start is noticed (its `alive` key expires) and what it held goes back to
  the front of its queue (RQ's BLPOP on two queues would lose it). The next job is taken in the
  round trip that writes the last one's outcome: two scripted round trips a job.
- Heartbeats from a thread, with a short expiry (WORKER_LOST_AFTER): a worker that dies or is
  paused mid-job is noticed within seconds, not after the job's timeout plus a minute.
- Fencing: success and failure are written by one script that checks, atomically with the
  writes, that this attempt's execution is still registered. After a worker was presumed lost, its job is
  queued again; if the lost worker comes back (SIGCONT, a healed network), its late outcome
  (often a timeout raised on resume) is dropped instead of overwriting the new attempt's result.
- Symbol errors and timeouts fail the job without retries (the source already retried; a slow
  symbol would only be slow again); a dead worker's job is retried. Each failure carries a
  message for people in `job.meta["error"]`.
- Only the project's own job function runs (jobs/job_class.py TrendsJob).
We use neither job dependencies, repeats nor RQ's rate limits, so their bookkeeping is left out.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import SimpleWorker, worker_registration
from rq.exceptions import DeserializationError, NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry, clean_registries
from rq.suspension import WORKERS_SUSPENDED
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from jobs.governor import PAUSED_RECHECK, PutBack
from jobs.job_class import RefusedJobError, TrendsJob
from jobs.records import APPLY_RECORDED, JOB_STATS_KEY, REDIS_UNREACHABLE, VERSION, alive_key, inflight_key, recorded
from jobs.sources import PriceDataError
from jobs.tasks import failure_message, outcome_of

log = logging.getLogger(__name__)

INFLIGHT_WORKERS_KEY = "trends:inflight-workers"  # set: workers that may hold jobs in an in-flight list
RECOVERY_LOCK_KEY = "trends:inflight:recovery-lock"

# take(list, first): move the first job of the first non-empty queue (KEYS[first..], in priority
# order) to this worker's in-flight list; give {queue key, job id, the job's hash as a flat list}
# (the hash in the same round trip), or false when every queue is empty. A job already in the list
# (taken, but its reply or registration lost to a Redis error) comes first, so taking again after
# an error (redis-py retries commands) never strands one. The worker is listed among those whose
# lists are recovered if they die, in the same step: a worker back from a pause, delisted meanwhile,
# may take before its heartbeat lists it again.
TAKE = """
local function take(inflight, first)
  redis.call('SADD', '""" + INFLIGHT_WORKERS_KEY + """', string.sub(inflight, #'""" + inflight_key("") + """' + 1))
  local held = redis.call('LINDEX', inflight, 0)
  if held then
    local origin = redis.call('HGET', 'rq:job:' .. held, 'origin') or ''
    return {'rq:queue:' .. origin, held, redis.call('HGETALL', 'rq:job:' .. held)}
  end
  for i = first, #KEYS do
    local job_id = redis.call('LMOVE', KEYS[i], inflight, 'LEFT', 'RIGHT')
    if job_id then return {KEYS[i], job_id, redis.call('HGETALL', 'rq:job:' .. job_id)} end
  end
  return false
end
"""
TAKE_SCRIPT = TAKE + "return take(KEYS[1], 2)"  # KEYS: the in-flight list, then the queues
# Apply RQ's own bookkeeping for a job (ARGV[3] commands that RQ's code queued on a pipeline that is
# never sent: jobs/records.py `recorded`) only if this attempt still owns the job: the
# job id ARGV[2] is still in this worker's in-flight list KEYS[1] (ARGV[1] 'list') and neither
# deleted nor cancelled since it was taken (then it leaves the list, not run), or the attempt is still
# registered in its queue's started registry KEYS[1] (ARGV[1] 'zset'). Returns 1 if applied.
# One round trip, atomic: what WATCH, a read and MULTI/EXEC did in three.
# With more KEYS (`rq suspend`'s key, the in-flight list, the queues), an outcome's write also takes
# the worker's next job, unless the fleet is suspended: {1 or 0, what take() gives}. One round trip less a job.
GUARDED_SCRIPT = APPLY_RECORDED + TAKE + """
local owned, applied = nil, 0
if ARGV[1] == 'list' then
  owned = redis.call('LPOS', KEYS[1], ARGV[2])
  local status = redis.call('HGET', 'rq:job:' .. ARGV[2], 'status')
  if owned and (not status or status == 'canceled') then
    redis.call('LREM', KEYS[1], 1, ARGV[2])
    owned = nil
  end
else
  owned = redis.call('ZSCORE', KEYS[1], ARGV[2])
end
if owned then
  apply(4, tonumber(ARGV[3]))
  applied = 1
end
if #KEYS == 1 then return applied end
if redis.call('EXISTS', KEYS[2]) == 1 then return {applied, false} end
return {applied, take(KEYS[3], 4)}
"""
# A worker whose alive key (KEYS[1]) has expired, or any worker giving back its own (ARGV[2] 'own'):
# put each job in its in-flight list (KEYS[2]) that is still queued back at the front of its queue,
# then forget the list. Atomic, so a worker coming back either finds its job still in the list (and
# runs it) or not (and leaves it).
RECOVER_SCRIPT = """
if ARGV[2] ~= 'own' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
for _, id in ipairs(ids) do
  local status = redis.call('HGET', 'rq:job:' .. id, 'status')
  local origin = redis.call('HGET', 'rq:job:' .. id, 'origin')
  if status == 'queued' and origin then redis.call('LPUSH', 'rq:queue:' .. origin, id) end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return #ids
"""


def _symbol_of(job: Job) -> str:
    """Name the symbol a job analyses (its first argument), for messages."""
    return str(job.args[0]) if job.args else job.id


def redis_retry_waits() -> Iterator[float]:
    """Give the seconds to wait before each new try at an unreachable Redis: 1, doubling up to 30."""
    wait = 1.0
    while True:
        yield wait
        wait = min(wait * 2, 30)


class TrendsWorker(SimpleWorker):
    """SimpleWorker (no fork per job) with in-job heartbeats, fenced outcomes and plain-words failures."""

    job_class = TrendsJob

    def __init__(self, *args: Any, lost_after: int, source: str, give_up_after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_after = lost_after
        self.give_up_after = give_up_after  # a job the price source's cool-downs held back this long fails instead
        self.source = source  # the price source's name, advertised in the worker's hash (and its name)
        self.inflight_key = inflight_key(self.name)
        self.alive_key = alive_key(self.name)
        self._take = self.connection.register_script(TAKE_SCRIPT)
        self._recover = self.connection.register_script(RECOVER_SCRIPT)
        self._guarded = self.connection.register_script(GUARDED_SCRIPT)
        self._running: tuple[Job, Execution] | None = None  # (job, execution) while a job runs
        self._beater: threading.Thread | None = None
        self._done = threading.Event()
        self._suspension_checked_at = -1.0
        self._idle_written = False  # whether the running job's outcome also wrote the worker's "idle" state
        self._outcome: str | None = None  # why the running job failed, once handle_exception has said (for /metrics)
        self._putting_back: PutBack | None = None  # the running job's way back to its queue, if the governor gave it no slot
        self._paused_until: dict[str, float] = {}  # queue name → when to take from it again, after a deferral
        self._next_taken: tuple[bytes, bytes, list[bytes]] | None = None  # taken by the last outcome's write

    def serialize(self) -> dict:
        """Add the price source and the project's version to RQ's worker hash, for /healthz, /metrics and the fleet check."""
        return {**super().serialize(), "trends_source": self.source, "trends_version": VERSION}

    @property
    def dequeue_timeout(self) -> int:
        """Give the maintenance interval: RQ derives the connection's socket timeout from this."""
        # Not how long an idle worker blocks: a second at a time (see dequeue_job_and_maintain_ttl).
        return self.maintenance_interval

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """Keep the worker listed; RQ's own beats around every job count at most once a second."""
        # RQ beats around every job (three round trips each time). At most one a second keeps the
        # worker just as alive and, measured here, halves RQ's own cost per job (4.7 → 2.4-2.9 ms).
        recent = self.last_heartbeat and (now() - self.last_heartbeat).total_seconds() < 1
        if timeout is None and pipeline is None and recent:
            return
        # The worker stays listed WORKER_TTL s after its last beat (RQ asks less before a job, more when idle).
        with self._unless_unreachable("heartbeat"):
            super().heartbeat(self.worker_ttl, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """Honour `rq suspend`, asking Redis at most once a second rather than before every job."""
        if time.monotonic() - self._suspension_checked_at >= 1:
            with self._unless_unreachable("the rq suspend check"):
                super().check_for_suspension(burst)
                self._suspension_checked_at = time.monotonic()  # asked again next time if Redis was unreachable

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """Record the worker's state; once it is suspended, give back a job taken with the last outcome first.

        Given back, the job waits at the front of its queue, where operators see it (and can delete
        it) while the fleet is suspended, not in this worker's in-flight list.
        """
        if state == WorkerStatus.SUSPENDED and self._next_taken:
            self._give_back(self.name, own=True)
            self.log.info("Worker %s: suspended; gave the job it had taken back to its queue", self.name)
        super().set_state(state, pipeline)

    def run_maintenance_tasks(self) -> None:
        """Run RQ's maintenance (its registries, lost workers' jobs), again next time if Redis was unreachable."""
        with self._unless_unreachable("maintenance"):
            super().run_maintenance_tasks()

    @contextlib.contextmanager
    def _unless_unreachable(self, what: str) -> Iterator[None]:
        """Go on while Redis is unreachable: RQ's loop calls these between jobs and would quit on the error.

        The worker holds nothing then; its next take waits for Redis (dequeue_job_and_maintain_ttl).
        """
        try:
            yield
        except REDIS_UNREACHABLE as exc:
            self.log.warning("Worker %s: %s skipped: Redis unreachable (%s)", self.name, what, exc)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> tuple[Job, Queue] | None:
        """Take the next job into this worker's in-flight list, interactive queue first.

        Blocks on the interactive queue only (a blocking move takes one list), a second at a time,
        so an idle fleet notices a bulk job within a second. timeout None: don't block (burst mode).
        """
        if self._beater is None:
            self._beat()
            self._beater = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
            self._beater.start()
        self._set_idle()
        self.procline("Listening on " + ",".join(self.queue_names()))
        waits = redis_retry_waits()
        while True:
            try:
                self.heartbeat()
                self.check_for_suspension(burst=timeout is None)  # RQ checks only between jobs; an idle worker waits here
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                for queue in self.queues:  # asked once, then kept: RQ's retry asks while recording, which needs no Redis then
                    queue.get_redis_server_version()
                taken = self._take_one(timeout)
                if not taken:
                    if timeout is None:
                        return None
                    continue
                job_and_queue = self._job_taken(*taken)
                if job_and_queue:
                    return job_and_queue
            except REDIS_UNREACHABLE as exc:
                wait = next(waits)
                self.log.error("Worker %s: Redis unreachable (%s); retrying in %g s", self.name, exc, wait)
                time.sleep(wait)

    def _take_one(self, timeout: int | None) -> tuple[bytes, bytes, list[bytes] | None] | None:
        """Take a job into the in-flight list (one held already comes first): its queue's key, id and hash, or None.

        The hash is None when the job was taken by the blocking wait (it is read afterwards).
        """
        if self._next_taken:  # taken with the last job's outcome, in its round trip
            taken, self._next_taken = self._next_taken, None
            return taken
        queues = self._takeable_queues()
        taken = self._take(keys=self._take_keys(queues))
        if taken:
            return taken[0], taken[1], taken[2]
        if timeout is not None:
            if not queues or queues[0] is not self.queues[0]:  # interactive paused: nothing to block on
                time.sleep(min(timeout, 1))
                return None
            moved = self.connection.blmove(self.queues[0].key, self.inflight_key, min(timeout, 1))
            if moved:
                return self.queues[0].key.encode(), moved, None
        return None

    def _take_keys(self, queues: list[Queue]) -> list[str]:
        """List the keys a take needs (take() in TAKE): this worker's in-flight list, then `queues` in priority order."""
        return [self.inflight_key, *(queue.key for queue in queues)]

    def _takeable_queues(self) -> list[Queue]:
        """List the queues to take from now, in priority order: not those paused after a deferral."""
        moment = time.monotonic()
        return [queue for queue in self.queues if self._paused_until.get(queue.name, 0) <= moment]

    def _job_taken(self, queue_key: bytes, raw_id: bytes, fields: list[bytes] | None) -> tuple[Job, Queue] | None:
        """Read a job just taken, with its queue; drop it from the in-flight list if it is gone or unreadable."""
        queue = next((q for q in self.queues if q.key == queue_key.decode()), None)
        job_id = raw_id.decode()
        try:
            job = self._restore(job_id, fields)
        except (*REDIS_UNREACHABLE, StopRequested):
            raise  # a stopping worker gives what it holds back at teardown
        except Exception as exc:  # gone, or a hash RQ cannot read: drop it rather than die on it
            job = None
            if not isinstance(exc, NoSuchJobError):
                self.log.warning("Worker %s: dropped unreadable job %s: %r", self.name, job_id, exc)
                self.connection.hincrby(JOB_STATS_KEY, f"{queue.name if queue else 'unknown'}:refused", 1)
        if job is None or queue is None:
            self.connection.lrem(self.inflight_key, 1, job_id)
            return None
        self.log.info("Worker %s: %s: %s", self.name, queue.name, job_id)
        return job, queue

    def _restore(self, job_id: str, fields: list[bytes] | None) -> Job:
        """Build the job from the hash TAKE returned with it (as RQ's fetch would), or read it now if it came without."""
        if fields is None:
            return self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
        if not fields:
            raise NoSuchJobError(f"No such job: {job_id}")
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        job.restore(dict(zip(fields[::2], fields[1::2])))
        return job

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job here if this worker still holds it in flight (it went back to its queue if not)."""
        execution = self._register(job)
        if execution is None:
            self.log.warning("Worker %s: job %s went back to its queue while this worker was away, or was deleted "
                             "or cancelled; not running it here", self.name, job.id)
            return
        self._running, self._idle_written = (job, execution), False
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._running = None
        # Redis has "idle" already if it was written with the outcome. Only now does the worker stop counting
        # as busy, so a SIGTERM during the outcome's write waits for the job, as RQ means it to (a warm stop).
        if self._idle_written:
            self._state = WorkerStatus.IDLE
        else:
            self.set_state(WorkerStatus.IDLE)

    def _set_idle(self) -> None:
        """Show the worker idle, unless it already is (a round trip saved per job)."""
        if self.get_state() != WorkerStatus.IDLE:
            self.set_state(WorkerStatus.IDLE)

    def _register(self, job: Job) -> Execution | None:
        """Register this attempt and mark the job started, atomically, if we still hold it in flight."""
        tries: list[Execution] = []  # one per try: a try whose reply was lost to Redis may have been applied

        def register(pipe: Pipeline) -> None:
            tries.append(Execution.create(job, self.lost_after, pipeline=pipe, worker_name=self.name))
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            pipe.lrem(self.inflight_key, 1, job.id)

        # Recorded again for each try: the attempt's expiry in the started registry is a time, and a
        # write that lands late must carry a fresh one, or the job counts as abandoned at once.
        execution = tries[-1] if self._if_owned("list", self.inflight_key, job.id, register, "start", record_each_try=True) \
            else self._applied_earlier(job, tries)
        if execution is None:
            self.set_state(WorkerStatus.IDLE)
            return None
        self.executions[execution.id] = execution
        return execution

    def _applied_earlier(self, job: Job, tries: list[Execution]) -> Execution | None:
        """Find the try (if any) that Redis applied though its reply was lost: renew its expiry if it is still registered."""
        registry = job.started_job_registry
        for execution in tries:
            def renew(pipe: Pipeline, execution: Execution = execution) -> None:
                execution.heartbeat(registry, self.lost_after, pipeline=pipe)

            if self._if_owned("zset", registry.key, execution.composite_key, renew, "start"):
                return execution
        return None

    def _if_owned(self, kind: str, key: str, member: str, bookkeeping: Callable[[Pipeline], None], what: str,
                  record_each_try: bool = False, take_next: bool = False) -> bool:
        """Apply what `bookkeeping` writes (RQ's own calls, onto a pipeline) only if `member` is still in `key`.

        While Redis is unreachable, the worker keeps what it has (the job it holds, an outcome) and
        tries again, 1 s, then doubling up to 30 s: a Redis restart costs neither the work done nor
        the worker. The check runs again each time, so a job given up on meanwhile is not written.
        A stop request ends the waiting (the job is then handled as the job of a lost worker).
        `record_each_try`: record the writes again before each try, for writes that carry times (an
        outcome is recorded once: recording RQ's retry uses one up each time). `what` names it in the log.
        `take_next`: take the next job in the same round trip (whether or not this was applied), for `_take_one`.
        """
        waits = redis_retry_waits()
        count, words = recorded(self.connection, bookkeeping)
        keys = [key]
        if take_next:
            keys += [WORKERS_SUSPENDED, *self._take_keys(self._takeable_queues())]
        while True:
            try:
                reply = self._guarded(keys=keys, args=[kind, member, count, *words])
                if not take_next:
                    return reply == 1
                self._next_taken = tuple(reply[1]) if reply[1] else None
                return reply[0] == 1
            except REDIS_UNREACHABLE as exc:
                if self._stop_requested:
                    raise
                wait = next(waits)
                self.log.error("Worker %s: Redis unreachable (%s) while writing the %s of %s; keeping it, retrying in %g s",
                               self.name, exc, what, member, wait)
                time.sleep(wait)
                if record_each_try:
                    count, words = recorded(self.connection, bookkeeping)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Only show the job in the process title: `_register` has already marked it started."""
        # RQ marks the job started here; _register does it atomically with registering the attempt, so a
        # worker paused in between cannot mark started a job that went on elsewhere.
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def _beat_forever(self) -> None:
        while not self._done.wait(self.lost_after / 3):
            self._beat()

    def teardown(self) -> None:
        """Stop the heartbeat thread, give back any job taken but not started, then let RQ tidy up."""
        self._done.set()
        try:  # as a lost worker's would be, at once: it is no longer alive
            self._give_back(self.name, own=True)
            self.connection.delete(self.alive_key)
        except RedisError as exc:
            self.log.warning("Worker %s: could not give back the jobs it held (%s); the next maintenance will", self.name, exc)
        super().teardown()

    def _beat(self) -> None:
        """Say this worker is alive (busy or not) and keep its running job's execution alive; never revive one."""
        running = self._running
        try:
            with self.connection.pipeline() as pipe:
                pipe.set(self.alive_key, 1, ex=self.lost_after)
                pipe.sadd(INFLIGHT_WORKERS_KEY, self.name)
                pipe.hexists(self.key, "birth")
                if running:
                    self.heartbeat(pipeline=pipe)
                    job, execution = running
                    execution.heartbeat(job.started_job_registry, self.lost_after, pipeline=pipe)  # ZADD XX
                registered = pipe.execute()[2]
                if not registered and self.birth_date:  # back after its registration expired (paused, cut off)
                    pipe.hset(self.key, mapping=self.serialize())
                    worker_registration.register(self, pipe)
                    pipe.expire(self.key, self.worker_ttl)
                    pipe.execute()
        except RedisError as exc:
            log.warning("Worker %s: heartbeat failed: %s", self.name, exc)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Note when the job ended, and no more: RQ's heartbeat here would let a late attempt touch the job."""
        job.ended_at = now()

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """Say in words what went wrong; expected failures (symbol errors, timeouts) get no traceback and no retry."""
        exc_type, exc_value = exc_info[0], exc_info[1]
        self._outcome = None
        if issubclass(exc_type, PutBack) and not self._gave_up(job, exc_value):
            job.meta["waiting_for_yahoo"] = str(exc_value)  # what a request still waiting on it is told (webapp/analyses.py)
            self._putting_back = exc_value
            self.log.info("Worker %s: job %s put back in its queue: %s", self.name, job.id, exc_value)
            return
        if issubclass(exc_type, RefusedJobError):  # already recorded (and counted) by the job class
            job.retries_left = 0
            return
        if issubclass(exc_type, DeserializationError):
            job.meta["error"] = f"{job.id}: refused: its data is not JSON"
            job.retries_left = 0
            self.log.warning("Worker %s: job %s from queue %s: %s", self.name, job.id, job.origin, job.meta["error"])
            self.connection.hincrby(JOB_STATS_KEY, f"{job.origin}:refused", 1)
            return
        if not issubclass(exc_type, PutBack):  # one that gave up has its message from _gave_up
            job.meta["error"] = failure_message(_symbol_of(job), exc_type, job.timeout, exc_value)
        self._outcome = "rate_limited" if issubclass(exc_type, PutBack) else outcome_of(exc_type)
        if issubclass(exc_type, (PriceDataError, JobTimeoutException, PutBack)):
            job.retries_left = 0
            self.log.info("Worker %s: job %s failed (%s): %s", self.name, job.id, self._outcome, job.meta["error"])
            return
        super().handle_exception(job, *exc_info)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry,
                           execution: Execution) -> None:
        """Store the result and count the job finished, only if this attempt still owns the job."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)

        def store(pipe: Pipeline) -> None:
            self.increment_successful_job_count(pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            job._handle_success(result_ttl, pipeline=pipe, worker_name=self.name, execution_id=execution.id,
                                execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
            job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
            pipe.hincrby(JOB_STATS_KEY, f"{queue.name}:ok", 1)

        self._store_if_current(job, execution, store)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry | None = None,
                           exc_string: str = "", execution: Execution | None = None) -> None:
        """Retry the job or store its failure, only if this attempt still owns the job."""
        if execution is None:  # RQ's paths outside an execution (a job stuck in the intermediate queue)
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        putting_back, self._putting_back = self._putting_back, None
        if putting_back:
            self._put_back(job, queue, execution, putting_back)
            return
        stopped = self._stopped_job_id == job.id
        retry = job.should_retry and not stopped
        outcome = self._outcome

        def store(pipe: Pipeline) -> None:
            self.increment_failed_job_count(pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            if retry:
                job.retry(queue, pipe)
                return
            job.set_status(JobStatus.STOPPED if stopped else JobStatus.FAILED, pipeline=pipe)
            job.save(pipeline=pipe, include_result=False)  # with meta["error"]
            job._handle_failure(exc_string, pipe, worker_name=self.name, execution_id=execution.id,
                                execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
            if outcome:  # refusals are counted where they are recorded
                pipe.hincrby(JOB_STATS_KEY, f"{queue.name}:{outcome}", 1)

        if self._store_if_current(job, execution, store) and stopped:
            self._stopped_job_id = None

    def _gave_up(self, job: Job, put_back: PutBack) -> bool:
        """Whether cool-downs have held this job back longer than give_up_after (its failure then says so)."""
        if not put_back.cooling:
            return False
        since = job.meta.setdefault("rate_limited_since", time.time())
        if time.time() - since <= self.give_up_after:
            return False
        job.meta["error"] = (f"{_symbol_of(job)}: Yahoo has refused this fleet's calls (HTTP 429), or they were paused, "
                             f"for over {self.give_up_after} s; try again later")
        return True

    def _put_back(self, job: Job, queue: Queue, execution: Execution, put_back: PutBack) -> None:
        """Queue a deferred job again at the front, its retries untouched, and leave its queue (and those after) for a while.

        The job keeps its place, its id (whoever waits on it still does) and its first enqueue time (so
        the queue's age, its alert and the backlog bound see how long it has waited); this worker takes
        other work, if any is allowed, until the egress may have a slot for it, or a few seconds (a
        cool-down ended early by hand is noticed).
        """
        first_enqueued = job.enqueued_at

        def requeue(pipe: Pipeline) -> None:
            queue._enqueue_job(job, pipeline=pipe, at_front=True)  # what RQ's own retry does, without using one up
            if first_enqueued:
                job.enqueued_at = first_enqueued
                pipe.hset(job.key, "enqueued_at", utcformat(first_enqueued))

        self._store_if_current(job, execution, requeue, take_next=False)  # not the job it puts back, nor from paused queues
        resume_at = time.monotonic() + min(put_back.retry_after, PAUSED_RECHECK)
        for later in self.queues[self.queues.index(queue):]:
            self._paused_until[later.name] = resume_at

    def _store_if_current(self, job: Job, execution: Execution, store: Callable[[Pipeline], None],
                          take_next: bool = True) -> bool:
        """Apply `store` (and end the attempt) atomically if this attempt still owns the job; else drop the outcome.

        The same round trip takes the worker's next job (`take_next`, unless it is stopping or the
        fleet is suspended): a worker that then stops (a SIGTERM, `--max-jobs`) or sees a suspension
        gives it back, as it does any job it took and did not start.
        """
        def end(pipe: Pipeline) -> None:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.hset(self.key, "state", WorkerStatus.IDLE)  # with the outcome: no round trip of its own (execute_job)

        def store_and_end(pipe: Pipeline) -> None:
            store(pipe)
            end(pipe)

        if self._if_owned("zset", job.started_job_registry.key, execution.composite_key, store_and_end, "outcome",
                          take_next=take_next and not self._stop_requested):
            self._idle_written = True
            return True
        latest = job.latest_result()
        if latest is not None and latest.execution_id == execution.id:  # a try whose reply Redis lost wrote it
            self._idle_written = True
            return True
        self.log.warning("Worker %s: job %s was given up on and queued again while this attempt ran; its outcome "
                         "is dropped", self.name, job.id)
        with self.connection.pipeline() as pipe:
            end(pipe)
            pipe.execute()
        self._idle_written = True
        return False

    def clean_registries(self) -> None:
        """Put lost workers' jobs back in their queues, then clean each queue's registries under a short lock."""
        self._recover_lost_workers()
        # RQ's cleaning lock lasts 899 s: a worker killed or paused while cleaning would stop the
        # re-queueing of lost jobs for 15 minutes. This one expires with the maintenance interval.
        for queue in self.queues:
            if self.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=self.maintenance_interval):
                try:
                    clean_registries(queue, [self._count_lost, *self._exc_handlers])
                    worker_registration.clean_worker_registry(queue)
                except (*REDIS_UNREACHABLE, StopRequested):
                    raise
                except Exception:  # a job RQ cannot read must not stop the clean-up, or kill each worker in turn
                    self.log.exception("Worker %s: cleaning the registries of %s failed", self.name, queue.name)
                queue.release_maintenance_lock()  # no intermediate queue to clean: in-flight lists replace it
        self.last_cleaned_at = now()

    def _count_lost(self, job: Job, *exc_info: Any) -> bool:
        """Count a job whose worker was lost, when it has no retry left (its symbol then ends so); go on to the next handler."""
        if not job.retries_left:
            self.connection.hincrby(JOB_STATS_KEY, f"{job.origin}:worker_lost", 1)
        return True

    def _recover_lost_workers(self) -> None:
        """Put the jobs that lost workers had taken but not started back in their queues (one worker at a time)."""
        if not self.connection.set(RECOVERY_LOCK_KEY, 1, nx=True, ex=self.maintenance_interval):
            return
        for name in self.connection.smembers(INFLIGHT_WORKERS_KEY):
            name = name.decode()
            recovered = self._give_back(name)
            if recovered:
                self.log.warning("Worker %s: put %d job(s) held by lost worker %s back in their queues",
                                 self.name, recovered, name)

    def _give_back(self, name: str, own: bool = False) -> int:
        """Put the jobs worker `name` took but did not start back in their queues, if it is no longer alive (or `own`)."""
        recovered = self._recover(keys=[alive_key(name), inflight_key(name), INFLIGHT_WORKERS_KEY],
                                  args=[name, "own" if own else ""])
        if own:
            self._next_taken = None
        return recovered

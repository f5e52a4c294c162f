"""The correctness core of the project's RQ worker: a reliable take, an atomic start, fenced outcomes.

RQ's data model is kept as it is (job hashes, result streams, registries), so rq-dashboard and
RQ's own tools read it as usual. What changes, step by step of RQ's loop (rq/worker/base.py), and why:
- take: never a bare pop. The job moves into this worker's in-flight list in one script
  (jobs/worker_scripts.py), interactive queue first; an idle worker blocks on the fleet's doorbell,
  rung by the web app's claims, the reaper and recovery, so a job in any queue starts at once. A worker that dies or is paused
  while it holds a job not yet started is noticed, and the job goes back to the front of its queue.
- register: the attempt is registered and the job marked started in one step, only if the job is
  still in this worker's in-flight list (not given back, deleted or cancelled meanwhile).
- fence: an outcome is stored only if its attempt is still registered, in the same step; the
  reaper (jobs/recovery.py) gives up on an attempt in one step with its removal: they cannot both win.
What reaches inside RQ for this is listed in docs/architecture.md and pinned by tests/test_rq_surface.py.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline
from rq.exceptions import NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.utils import now
from rq.worker import DequeueStrategy, WorkerStatus

from jobs.connection import replicas_behind, run_script
from jobs.records import DOORBELL_KEY, REDIS_UNAVAILABLE, fair_key, recorded, turns_doorbell_key
from jobs.recovery import RecoveringWorker
from jobs.worker_scripts import GUARDED_SCRIPT, TAKE_SCRIPT

IDLE_WAIT = 1  # seconds an idle worker blocks on the doorbell before it looks again (for jobs queued by others than us)
Taken = tuple[bytes, bytes, list[bytes]]  # a taken job's queue key, id and hash (as a flat list)


class FencedWorker(RecoveringWorker):
    """SimpleWorker (no fork per job) that never loses a job it took and lets only a job's current attempt store its outcome."""

    def __init__(self, *args: Any, disable_default_exception_handler: bool = False, **kwargs: Any) -> None:
        if disable_default_exception_handler:
            raise ValueError("disable_default_exception_handler is not supported: every failure is stored, so whoever "
                             "waits on the job gets its error")
        super().__init__(*args, **kwargs)
        self._take = self.connection.register_script(TAKE_SCRIPT)
        self._guarded = self.connection.register_script(GUARDED_SCRIPT)
        # In a Sentinel group, a start is on a replica before the job runs: a failover then cannot lose
        # a run, which would run the job again without using a retry (docs/operations.md).
        self._start_replicas = replicas_behind(self.connection)

    def work(self, *args: Any, dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
             with_scheduler: bool = False, **kwargs: Any) -> bool:
        """Run RQ's loop; refuse, in words, the options whose promise this worker does not keep."""
        if dequeue_strategy != DequeueStrategy.DEFAULT:
            raise ValueError(f"dequeue strategy {dequeue_strategy!r} is not supported: this worker always takes the "
                             "interactive queue first (its latency promise); run it with the default strategy")
        if with_scheduler:
            raise ValueError("with_scheduler is not supported: the project schedules no jobs (retries are immediate)")
        return super().work(*args, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        """Give the maintenance interval: RQ derives the connection's socket timeout from this."""
        return self.maintenance_interval  # not how long an idle worker blocks: IDLE_WAIT at a time

    # take

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> tuple[Job, Queue] | None:
        """Take the next job into this worker's in-flight list, interactive queue first; None when idle too long.

        timeout None: don't block (burst mode). Blocks on the doorbell IDLE_WAIT s at a time.
        """
        self._start_beating()
        self._set_idle()
        self.procline("Listening on " + ",".join(self.queue_names()))
        idle_since = time.monotonic()
        while max_idle_time is None or time.monotonic() - idle_since < max_idle_time:
            self.heartbeat()
            self.check_for_suspension(burst=timeout is None)  # RQ checks only between jobs; an idle worker waits here
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
            taken = self._until_written("a take", lambda: self._take_one(timeout))
            if taken:
                job_and_queue = self._until_written(f"the take of {taken[1]!r}", lambda: self._job_taken(*taken))
                if job_and_queue:
                    return job_and_queue
            elif timeout is None:
                return None
        return None

    def _set_idle(self) -> None:
        """Show the worker idle, unless it already is."""
        if self.get_state() != WorkerStatus.IDLE:
            self.set_state(WorkerStatus.IDLE)

    def _take_one(self, timeout: int | None) -> Taken | None:
        """Take a job into the in-flight list (one held already comes first): its queue's key, id and hash, or None.

        With nothing to take, blocks on the doorbell for up to IDLE_WAIT s (unless `timeout` is None) and gives None.
        """
        for queue in self.queues:  # asked once, then kept: recording RQ's retry asks, and must not fail halfway
            queue.get_redis_server_version()
        queues = self._takeable_queues()
        taken = self._take(keys=self._take_keys(queues), args=self.prefixes)
        if taken:
            return taken[0], taken[1], taken[2]
        if timeout is None:
            return None
        if len(queues) == len(self.queues):
            self.connection.blpop([DOORBELL_KEY], min(timeout, IDLE_WAIT))
        elif queues and queues[0] is self.queues[0]:  # later queues paused: the doorbell's rings are not all ours
            # The turns' doorbell, rung for each job a client stages for the first queue (stale rings: cleared by the take).
            self.connection.blpop([turns_doorbell_key(queues[0].name)], min(timeout, IDLE_WAIT))
        else:
            time.sleep(min(timeout, IDLE_WAIT))
        return None

    def _take_keys(self, queues: list[Queue]) -> list[str]:
        """List the keys a take needs (take() in TAKE): in-flight list, doorbell, RQ's queue set, `queues` with their turns.

        The queues come in priority order, each followed by its clients' turns. Taking from the first of its
        queues only (the others paused), a worker's doorbell is that queue's turns' doorbell; from other
        subsets, none (''): the rings of others' jobs are not its to clear.
        """
        doorbell = DOORBELL_KEY if len(queues) == len(self.queues) else ""
        if len(queues) == 1 < len(self.queues) and queues[0] is self.queues[0]:
            doorbell = turns_doorbell_key(queues[0].name)
        return [self.inflight_key, doorbell, self.queue_class.redis_queues_keys,
                *(key for queue in queues for key in (queue.key, fair_key(queue.name)))]

    def _takeable_queues(self) -> list[Queue]:
        """List the queues to take from now, in priority order."""
        return self.queues

    def _job_taken(self, queue_key: bytes, raw_id: bytes, fields: list[bytes]) -> tuple[Job, Queue] | None:
        """Build a job just taken, with its queue; drop it from the in-flight list if it is gone or unreadable."""
        queue = next((q for q in self.queues if q.key == queue_key.decode()), None)
        job_id = raw_id.decode()
        job = None
        try:
            if not fields:
                raise NoSuchJobError(f"No such job: {job_id}")
            job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
            job.restore(dict(zip(fields[::2], fields[1::2])))  # the hash TAKE gave with it, as RQ's fetch would read it
        except (*REDIS_UNAVAILABLE, StopRequested):
            raise  # a stopping worker gives what it holds back at teardown
        except Exception as exc:  # gone, or a hash RQ cannot read: drop it rather than die on it
            job = None
            if not isinstance(exc, NoSuchJobError):
                self.log.warning("Worker %s: dropped unreadable job %s: %r", self.name, job_id, exc)
                self.job_unreadable(queue.name if queue else "unknown")
        if job is None or queue is None:
            self.connection.lrem(self.inflight_key, 1, job_id)
            return None
        self.log.info("Worker %s: %s: %s", self.name, queue.name, job_id)
        return job, queue

    def job_unreadable(self, queue_name: str) -> None:
        """Note a job dropped because its hash could not be read (a hook: the project counts it)."""

    # register

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job here if this worker still holds it in flight (it went back to its queue if not)."""
        execution = self._register(job)
        if execution is None:
            self.log.warning("Worker %s: job %s went back to its queue while this worker was away, or was deleted "
                             "or cancelled; not running it here", self.name, job.id)
            return
        self._running = (job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._running = None
        self._after_job()

    def _after_job(self) -> None:
        """Show the worker idle again: Redis has it already, written in the outcome's step (a round trip saved).

        Only now does the worker stop counting as busy, so a SIGTERM during the outcome's write waits
        for the job, as RQ means it to (a warm stop).
        """
        self._state = WorkerStatus.IDLE

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
        self._starting = (job, tries)  # the heartbeat keeps the tries alive meanwhile
        try:
            execution = tries[-1] if self._if_owned("list", self.inflight_key, job.id, register, "start",
                                                    record_each_try=True) else self._applied_earlier(job, tries)
        finally:
            self._starting = None
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

            if self._if_owned("zset", registry.key, execution.composite_key, renew, "start", record_each_try=True):
                return execution
        return None

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Only show the job in the process title: `_register` has already marked it started, atomically."""
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    # fence

    def _if_owned(self, kind: str, key: str, member: str, bookkeeping: Callable[[Pipeline], None], what: str,
                  record_each_try: bool = False, take_keys: list[str] | None = None) -> bool:
        """Apply what `bookkeeping` writes (RQ's own calls, onto a pipeline) only if `member` is still in `key`.

        While Redis is unavailable the worker keeps what it has and tries again; the check runs
        again each time, so a job given up on meanwhile is not written. `record_each_try`: record the
        writes again before each try, for writes that carry times (an outcome is recorded once:
        recording RQ's retry uses one up each time). `take_keys`: also take the next job in the same
        round trip (GUARDED_SCRIPT), given to `taken_with_outcome`.
        """
        recording: tuple[int, list[object]] | None = None

        def write() -> bool:
            nonlocal recording
            if recording is None or record_each_try:
                recording = recorded(self.connection, bookkeeping)
            count, words = recording
            reply = run_script(self._guarded, [key, *(take_keys or [])], [*self.prefixes, kind, member, count, *words],
                               self._start_replicas if what == "start" else 0)
            if not take_keys:
                return reply == 1
            self.taken_with_outcome(tuple(reply[1]) if reply[1] else None)
            return reply[0] == 1

        return self._until_written(f"the {what} of {member}", write)

    def taken_with_outcome(self, taken: Taken | None) -> None:
        """Keep the job an outcome's write took (a hook for a worker that passes `take_keys`)."""

    def outcome_take_keys(self) -> list[str] | None:
        """Give the keys with which an outcome's write also takes the next job (none here: a hook for round-trip savings)."""
        return None

    def _store_if_current(self, job: Job, execution: Execution, store: Callable[[Pipeline], None],
                          take_next: bool = True) -> bool:
        """Apply `store` (and end the attempt) atomically if this attempt still owns the job; else drop the outcome."""
        take_keys = self.outcome_take_keys() if take_next and not self._stop_requested else None

        def end(pipe: Pipeline) -> None:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.hset(self.key, "state", WorkerStatus.IDLE)

        def store_and_end(pipe: Pipeline) -> None:
            store(pipe)
            end(pipe)

        if self._if_owned("zset", job.started_job_registry.key, execution.composite_key, store_and_end, "outcome",
                          take_keys=take_keys):
            return True
        latest = job.latest_result()
        if latest is not None and latest.execution_id == execution.id:  # a try whose reply Redis lost wrote it
            return True
        self.log.warning("Worker %s: job %s was given up on and queued again while this attempt ran; its outcome "
                         "is dropped", self.name, job.id)

        def end_now() -> None:
            with self.connection.pipeline() as pipe:  # a new one each try: redis-py empties it after an error
                end(pipe)
                pipe.execute()

        self._until_written("the end of a dropped attempt", end_now)
        return False

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Note when the job ended, and no more: RQ's heartbeat here would let a late attempt touch the job."""
        job.ended_at = now()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry,
                           execution: Execution) -> None:
        """Store the result and count the job finished (RQ's writes), only if this attempt still owns the job."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)

        def store(pipe: Pipeline) -> None:
            self.increment_successful_job_count(pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            if result_ttl != 0:  # RQ's meaning of result_ttl=0: keep no result
                job._handle_success(result_ttl, pipeline=pipe, worker_name=self.name, execution_id=execution.id,
                                    execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
            job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
            self.outcome_writes(job, queue, pipe, succeeded=True)

        self._store_if_current(job, execution, store)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry | None = None,
                           exc_string: str = "", execution: Execution | None = None) -> None:
        """Retry the job or store its failure (RQ's writes), only if this attempt still owns the job."""
        if execution is None:  # RQ's paths outside an execution (a job stuck in the intermediate queue)
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        stopped = self._stopped_job_id == job.id
        retry = job.should_retry and not stopped

        def store(pipe: Pipeline) -> None:
            self.increment_failed_job_count(pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            if retry:
                job.retry(queue, pipe)
                return
            job.set_status(JobStatus.STOPPED if stopped else JobStatus.FAILED, pipeline=pipe)
            job.save(pipeline=pipe, include_result=False)  # with its meta
            job._handle_failure(exc_string, pipe, worker_name=self.name, execution_id=execution.id,
                                execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
            self.outcome_writes(job, queue, pipe, succeeded=False)

        if self._store_if_current(job, execution, store) and stopped:
            self._stopped_job_id = None

    def outcome_writes(self, job: Job, queue: Queue, pipe: Pipeline, succeeded: bool) -> None:
        """Add writes to a job's final outcome, in its fenced step (a hook: the project counts outcomes)."""

"""The project's RQ worker: the fenced core (jobs/fenced_worker.py), fewer round trips a job, and failures in words.

Round-trip savings, each measured in docs/performance.md and none needed for correctness:
- the next job is taken in the round trip that writes the last one's outcome (unless `rq suspend`
  is set): two scripted round trips a job (the worker's "idle" state goes with the outcome, fenced_worker.py);
- RQ's own heartbeat and suspension check, asked around every job, count at most once a second.
The project's failures: symbol errors and timeouts fail the job without retries (the source
already retried; a slow symbol would only be slow again); a dead worker's job is retried; a job the
Yahoo governor gave no slot goes back to the front of its queue, untouched. Each failure carries a
message for people in `job.meta["error"]`. Only the project's own job function runs (jobs/job_class.py).
"""
from __future__ import annotations

import time
from typing import Any

from redis.client import Pipeline
from rq.defaults import DEFAULT_SERIALIZER_CLASS
from rq.exceptions import DeserializationError
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer, resolve_serializer
from rq.suspension import WORKERS_SUSPENDED
from rq.timeouts import JobTimeoutException
from rq.utils import import_attribute, now, utcformat
from rq.worker import WorkerStatus

from config import Config
from jobs.fenced_worker import FencedWorker, Taken
from jobs.governor import PAUSED_RECHECK, PutBack
from jobs.job_class import SERIALIZER, SERIALIZER_PATH, OrjsonSerializer, RefusedJobError, TrendsJob
from jobs.records import JOB_STATS_KEY, VERSION
from jobs.sources import PriceDataError, source_name
from jobs.tasks import failure_message, outcome_of


def project_job_class(job_class: type[Job] | str | None) -> type[TrendsJob]:
    """Give TrendsJob where RQ's CLI passes its default; refuse any class but TrendsJob's own (it would run foreign code)."""
    resolved = import_attribute(job_class) if isinstance(job_class, str) else job_class
    if resolved in (None, Job):
        return TrendsJob
    if isinstance(resolved, type) and issubclass(resolved, TrendsJob):
        return resolved
    raise ValueError(f"job class {job_class!r} is not supported: this worker runs jobs.job_class.TrendsJob, which "
                     "refuses any function but the project's own")


def project_serializer(serializer: object) -> type:
    """Give the project's JSON serializer where RQ's CLI passes its default (pickle) or JSON; refuse any other."""
    if serializer in (None, DEFAULT_SERIALIZER_CLASS):  # RQ's CLI default, not a choice
        return SERIALIZER
    if isinstance(serializer, str) and serializer != "pickle":  # never_unpickle may have made 'pickle' JSON here
        serializer = resolve_serializer(serializer)  # RQ's aliases and dotted paths
    if serializer in (JSONSerializer, SERIALIZER, OrjsonSerializer):
        return SERIALIZER
    raise ValueError(f"serializer {serializer!r} is not supported: jobs and results are JSON ({SERIALIZER_PATH}), "
                     "never pickle")


def _symbol_of(job: Job) -> str:
    """Name the symbol a job analyses (its first argument), for messages."""
    return str(job.args[0]) if job.args else job.id


class TrendsWorker(FencedWorker):
    """The fenced worker with two round trips a job, plain-words failures, outcome counts and Yahoo deferrals."""

    job_class = TrendsJob

    def __init__(self, *args: Any, source: str = "", give_up_after: int = Config.YAHOO_GIVE_UP_AFTER,
                 job_class: type[Job] | str | None = None, serializer: object = None, **kwargs: Any) -> None:
        """Defaults from config.py, so `rq worker -w jobs.worker.TrendsWorker` runs it with the project's settings.

        RQ's CLI passes its own job class and serializer by default: the project's are used instead.
        """
        super().__init__(*args, job_class=project_job_class(job_class), serializer=project_serializer(serializer),
                         **kwargs)
        source = source or source_name(Config.PRICE_SOURCE)
        self.give_up_after = give_up_after  # a job the price source's cool-downs held back this long fails instead
        self.source = source  # the price source's name, advertised in the worker's hash (and its name)
        self._suspension_checked_at = -1.0
        self._outcome: str | None = None  # why the running job failed, once handle_exception has said (for /metrics)
        self._putting_back: PutBack | None = None  # the running job's way back to its queue, if the governor gave it no slot
        self._paused_until: dict[str, float] = {}  # queue name → when to take from it again, after a deferral
        self._next_taken: Taken | None = None  # taken by the last outcome's write

    def serialize(self) -> dict:
        """Add the price source and the project's version to RQ's worker hash, for /healthz, /metrics and the fleet check."""
        return {**super().serialize(), "trends_source": self.source, "trends_version": VERSION}

    # Round-trip savings

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """Keep the worker listed; RQ's own beats around every job count at most once a second."""
        # RQ beats around every job (three round trips each time). At most one a second keeps the
        # worker just as alive and, measured here, halves RQ's own cost per job (4.7 → 2.4-2.9 ms).
        recent = self.last_heartbeat and (now() - self.last_heartbeat).total_seconds() < 1
        if timeout is None and pipeline is None and recent:
            return
        super().heartbeat(self.worker_ttl, pipeline)  # listed WORKER_TTL s after its last beat

    def check_for_suspension(self, burst: bool) -> None:
        """Honour `rq suspend`, asking Redis at most once a second rather than before every job."""
        if time.monotonic() - self._suspension_checked_at >= 1:
            self._suspension_checked_at = time.monotonic()
            super().check_for_suspension(burst)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """Record the worker's state; once it is suspended, give back a job taken with the last outcome first.

        Given back, the job waits at the front of its queue, where operators see it (and can delete
        it) while the fleet is suspended, not in this worker's in-flight list.
        """
        if state == WorkerStatus.SUSPENDED and self._next_taken:
            self._give_back(self.name, own=True)
            self.log.info("Worker %s: suspended; gave the job it had taken back to its queue", self.name)
        super().set_state(state, pipeline)

    def _take_one(self, timeout: int | None) -> Taken | None:
        """Give the job taken with the last outcome, if any; else take one (FencedWorker)."""
        if self._next_taken:
            taken, self._next_taken = self._next_taken, None
            return taken
        return super()._take_one(timeout)

    def outcome_take_keys(self) -> list[str]:
        """Take the next job with each outcome, unless `rq suspend` is set (checked in the same step)."""
        return [WORKERS_SUSPENDED, *self._take_keys(self._takeable_queues())]

    def taken_with_outcome(self, taken: Taken | None) -> None:
        """Keep the job the outcome's write took, for the next `_take_one`."""
        self._next_taken = taken

    def _give_back(self, name: str, own: bool = False) -> int:
        """Give back a worker's jobs (FencedWorker); giving back its own includes one taken with an outcome."""
        if own:
            self._next_taken = None
        return super()._give_back(name, own)

    # The project's failures and counts

    def job_unreadable(self, queue_name: str) -> None:
        """Count a job whose hash could not be read as refused."""
        self.connection.hincrby(JOB_STATS_KEY, f"{queue_name}:refused", 1)

    def job_abandoned(self, job: Job, retried: bool, pipe: Pipeline) -> None:
        """Count a job whose worker was lost, when it has no retry left (its symbol then ends so)."""
        if not retried:
            pipe.hincrby(JOB_STATS_KEY, f"{job.origin}:worker_lost", 1)

    def outcome_writes(self, job: Job, queue: Queue, pipe: Pipeline, succeeded: bool) -> None:
        """Count the symbol's outcome (refusals are counted where they are recorded)."""
        outcome = "ok" if succeeded else self._outcome
        if outcome:
            pipe.hincrby(JOB_STATS_KEY, f"{queue.name}:{outcome}", 1)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """Say in words what went wrong, then run RQ's exception handlers (`--exception-handler`) for any failure.

        Expected failures (symbol errors, timeouts) get no traceback and no retry; a job put back for
        the price source's budget has not failed, and runs no handler.
        """
        expected = self._say_why(job, *exc_info)
        if expected is None:
            return
        if expected:
            call_exception_handlers(self._exc_handlers, job, *exc_info)
        else:
            super().handle_exception(job, *exc_info)  # the traceback to the log, then the handlers

    def _say_why(self, job: Job, *exc_info: Any) -> bool | None:
        """Put the failure's message and reason in the job's meta: True if it was expected, None for a put back."""
        exc_type, exc_value = exc_info[0], exc_info[1]
        self._outcome = None
        if issubclass(exc_type, PutBack) and not self._gave_up(job, exc_value):
            job.meta["waiting_for_yahoo"] = str(exc_value)  # what a request still waiting on it is told (webapp/analyses.py)
            self._putting_back = exc_value
            self.log.info("Worker %s: job %s put back in its queue: %s", self.name, job.id, exc_value)
            return None
        if issubclass(exc_type, RefusedJobError):  # already recorded (and counted) by the job class
            job.retries_left = 0
            return True
        if issubclass(exc_type, DeserializationError):
            job.meta["error"], job.meta["reason"] = f"{job.id}: refused: its data is not JSON", "refused"
            job.retries_left = 0
            self.log.warning("Worker %s: job %s from queue %s: %s", self.name, job.id, job.origin, job.meta["error"])
            with self._unless_unavailable("the count of a refused job"):
                self.connection.hincrby(JOB_STATS_KEY, f"{job.origin}:refused", 1)
            return True
        if not issubclass(exc_type, PutBack):  # one that gave up has its message from _gave_up
            job.meta["error"] = failure_message(_symbol_of(job), exc_type, job.timeout, exc_value)
        self._outcome = "rate_limited" if issubclass(exc_type, PutBack) else outcome_of(exc_type)
        job.meta["reason"] = self._outcome  # the failure's kind, for a client to act on (docs/api.md)
        if issubclass(exc_type, (PriceDataError, JobTimeoutException, PutBack)):
            job.retries_left = 0
            self.log.info("Worker %s: job %s failed (%s): %s", self.name, job.id, self._outcome, job.meta["error"])
            return True
        return False

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry | None = None,
                           exc_string: str = "", execution: Execution | None = None) -> None:
        """Put a deferred job back in its queue; retry or fail any other (FencedWorker)."""
        putting_back, self._putting_back = self._putting_back, None
        if putting_back and execution is not None:
            self._put_back(job, queue, execution, putting_back)
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

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
            queue.enqueue_job(job, pipeline=pipe, at_front=True)  # what RQ's own retry does, without using one up
            if first_enqueued:
                job.enqueued_at = first_enqueued
                pipe.hset(job.key, "enqueued_at", utcformat(first_enqueued))

        self._store_if_current(job, execution, requeue, take_next=False)  # not the job it puts back, nor from paused queues
        resume_at = time.monotonic() + min(put_back.retry_after, PAUSED_RECHECK)
        for later in self.queues[self.queues.index(queue):]:
            self._paused_until[later.name] = resume_at

    def _takeable_queues(self) -> list[Queue]:
        """List the queues to take from now, in priority order: not those paused after a deferral."""
        moment = time.monotonic()
        return [queue for queue in self.queues if self._paused_until.get(queue.name, 0) <= moment]

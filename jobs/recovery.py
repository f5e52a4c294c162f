"""Recovery and Redis outages for the project's worker: lost workers' jobs, the fenced reaper, heartbeats, waits.

- recover: heartbeats from a thread with a short expiry (`lost_after`), so a worker that dies or is
  paused mid-job is noticed within seconds, not after the job's timeout plus a minute. What a lost
  worker had taken but not started (its in-flight list) goes back to the front of its queue; an
  attempt whose registration expired is given up on by the fenced reaper (REAP_SCRIPT): retried or
  failed only if it is still registered and expired, in one step with its removal, so an attempt
  that stored its outcome meanwhile wins. (RQ's StartedJobRegistry.cleanup reads, then writes.)
- Redis unreachable or full: the worker keeps what it holds and tries again (1 s, doubling to
  MAX_RETRY_WAIT); RQ's writes between jobs are skipped, never the end of the worker. No heartbeat
  lands meanwhile, so after an outage a worker reaps nothing until live workers have had
  `lost_after` seconds of a working Redis to beat again. A refused password ends it at
  once, with exit 78 (config.REFUSED) and a message saying so: no wait fixes a setting.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis.client import Pipeline
from redis.exceptions import AuthenticationError, ExecAbortError, RedisError
from rq import SimpleWorker, worker_registration
from rq.callbacks import execute_failure_callback
from rq.exceptions import AbandonedJobError, NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers, record_job_failure
from rq.queue import Queue
from rq.utils import current_timestamp, now

from config import Config, refuse_login
from jobs.records import (
    DOORBELL_KEY,
    INFLIGHT_WORKERS_KEY,
    RECOVERY_LOCK_KEY,
    REDIS_UNAVAILABLE,
    alive_key,
    inflight_key,
    recorded,
)
from jobs.worker_scripts import REAP_SCRIPT, RECOVER_SCRIPT, rq_prefixes

MAX_RETRY_WAIT = 5  # seconds between tries at an unavailable Redis, at most: a held outcome lands soon after it is back


def redis_retry_waits() -> Iterator[float]:
    """Give the seconds to wait before each new try at an unavailable Redis: 1, doubling up to MAX_RETRY_WAIT."""
    wait = 1.0
    while True:
        yield wait
        wait = min(wait * 2, MAX_RETRY_WAIT)


def no_outage(exc: BaseException) -> None:
    """Act on a REDIS_UNAVAILABLE error that is no outage to wait out.

    A refused password ends this process with exit 78, saying so (a setting to fix); a transaction
    aborted for another reason than a full Redis is raised again (a fault to see).
    """
    if isinstance(exc, AuthenticationError):  # redis-py's for WRONGPASS, NOAUTH, and AUTH with no password set
        refuse_login(exc)
    if isinstance(exc, ExecAbortError) and "OOM" not in str(exc):
        raise exc


class RecoveringWorker(SimpleWorker):
    """SimpleWorker whose lost work comes back within seconds and which waits out an unavailable Redis."""

    def __init__(self, *args: Any, lost_after: int = Config.WORKER_LOST_AFTER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_after = lost_after
        self.inflight_key = inflight_key(self.name)
        self.alive_key = alive_key(self.name)
        self.prefixes = rq_prefixes(self.job_class, self.queue_class)
        self._reap = self.connection.register_script(REAP_SCRIPT)
        self._recover = self.connection.register_script(RECOVER_SCRIPT)
        self._running: tuple[Job, Execution] | None = None  # (job, execution) while a job runs
        # (job, its start's tries) while a start is being written: kept alive too, so a start that waits
        # (for Redis, or in a Sentinel group for a replica) is not given up on before its job runs.
        self._starting: tuple[Job, list[Execution]] | None = None
        self._beater: threading.Thread | None = None
        self._done = threading.Event()
        self._unavailable_at = -float("inf")  # when this worker last found Redis unavailable (time.monotonic())

    # RQ's writes between jobs: skipped while Redis is unavailable, never the end of the worker.

    def register_birth(self) -> None:
        """Register the worker, waiting for Redis if it is unavailable at start (a full Redis must not crash-loop it)."""
        self._until_written("its registration", super().register_birth)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """Keep the worker listed (RQ's beat), unless Redis is unavailable now."""
        with self._unless_unavailable("heartbeat"):
            super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """Record the worker's state (RQ's), unless Redis is unavailable now."""
        with self._unless_unavailable(f"state {state!r}"):
            super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """Honour `rq suspend` (RQ's check), unless Redis is unavailable now."""
        with self._unless_unavailable("the rq suspend check"):
            super().check_for_suspension(burst)

    def set_shutdown_requested_date(self) -> None:
        """Note a stop request in Redis (RQ's), unless Redis cannot take it: RQ calls this in the signal handler, mid-job."""
        try:
            super().set_shutdown_requested_date()
        except RedisError as exc:  # raised here, it would end the running job; the stop itself goes on
            self.log.warning("Worker %s: stop request not noted in Redis (%s)", self.name, exc)

    def run_maintenance_tasks(self) -> None:
        """Run RQ's maintenance (its registries, lost workers' jobs), again next time if Redis was unavailable."""
        with self._unless_unavailable("maintenance"):
            super().run_maintenance_tasks()

    @contextlib.contextmanager
    def _unless_unavailable(self, what: str) -> Iterator[None]:
        """Go on while Redis is unreachable or full: the worker holds nothing then, and its next take waits for Redis."""
        try:
            yield
        except REDIS_UNAVAILABLE as exc:
            self._note_outage(exc)
            self.log.warning("Worker %s: %s skipped: Redis unavailable (%s)", self.name, what, exc)

    def _until_written(self, what: str, write: Callable[[], Any]) -> Any:
        """Call `write` until Redis takes it, waiting 1 s, doubling to MAX_RETRY_WAIT; a stop request ends the waiting."""
        waits = redis_retry_waits()
        while True:
            try:
                return write()
            except REDIS_UNAVAILABLE as exc:
                self._note_outage(exc)
                if self._stop_requested:
                    raise
                wait = next(waits)
                self.log.error("Worker %s: Redis unavailable (%s) while writing %s; keeping it, retrying in %g s",
                               self.name, exc, what, wait)
                time.sleep(wait)

    def _note_outage(self, exc: BaseException) -> None:
        """Act on an error that is no outage (no_outage); else remember when Redis was last unavailable (reaping waits)."""
        no_outage(exc)
        self._unavailable_at = time.monotonic()

    def _start_beating(self) -> None:
        """Start the heartbeat thread, once: it beats whether the worker is idle or busy."""
        if self._beater is None:
            self._beat()
            self._beater = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
            self._beater.start()

    # recover

    def clean_registries(self) -> None:
        """Put lost workers' jobs back in their queues, reap expired attempts (fenced), and clean RQ's registries.

        Each queue under a lock that expires with the maintenance interval: RQ's lasts 899 s, and a
        worker killed or paused while cleaning would stop the re-queueing of lost jobs for 15 minutes.
        Not within `lost_after` s of an outage: no worker could beat during it, and live ones must first.
        """
        if time.monotonic() - self._unavailable_at < self.lost_after:
            return  # last_cleaned_at unchanged: the next look tries again
        self._recover_lost_workers()
        for queue in self.queues:
            if self.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=self.maintenance_interval):
                try:
                    self.reap(queue)  # RQ's clean_registries, with its started registry's clean-up fenced
                    for registry in (queue.finished_job_registry, queue.failed_job_registry, queue.deferred_job_registry):
                        registry.cleanup()  # (ready and rate-limit registries: the project's jobs have neither)
                    worker_registration.clean_worker_registry(queue)
                except (*REDIS_UNAVAILABLE, StopRequested):
                    raise
                except Exception:  # a job RQ cannot read must not stop the clean-up, or kill each worker in turn
                    self.log.exception("Worker %s: cleaning the registries of %s failed", self.name, queue.name)
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    def reap(self, queue: Queue) -> None:
        """Give up on each expired attempt in `queue`'s started registry: retry its job, or fail it (RQ's own writes).

        RQ's StartedJobRegistry.cleanup, fenced: each give-up is applied by REAP_SCRIPT only if the
        attempt is still registered and expired, so an attempt that stored its outcome meanwhile wins.
        """
        registry = queue.started_job_registry
        cutoff = current_timestamp()
        for member in self.connection.zrangebyscore(registry.key, 0, cutoff):
            member = member.decode()
            try:
                job = self.job_class.fetch(registry.parse_job_id(member), connection=self.connection,
                                           serializer=self.serializer)
            except (*REDIS_UNAVAILABLE, StopRequested):
                raise
            except Exception as exc:  # gone, or a hash RQ cannot read: it must not hold up the attempts after it
                if not isinstance(exc, NoSuchJobError):
                    self.log.warning("Worker %s: dropped the expired attempt %s of an unreadable job: %r", self.name,
                                     member, exc)
                self.connection.zrem(registry.key, member)
                continue
            retry = bool(job.retries_left and job.retries_left > 0)

            def give_up(pipe: Pipeline, job: Job = job, retry: bool = retry) -> None:
                if retry:
                    job.retry(queue, pipe)
                else:
                    record_job_failure(job, f"Moved to FailedJobRegistry, due to AbandonedJobError, at {now()}", pipe)
                self.job_abandoned(job, retry, pipe)

            count, words = recorded(self.connection, give_up)
            if self._reap(keys=[registry.key, DOORBELL_KEY], args=[*self.prefixes, member, cutoff, count, *words]):
                self.log.warning("Worker %s: job %s's worker was lost; %s", self.name, job.id,
                                 "queued again" if retry else "failed")
                try:  # after the give-up is stored, as RQ's cleanup does (the job class refuses any not ours)
                    execute_failure_callback(job, self.death_penalty_class, AbandonedJobError, AbandonedJobError(), None)
                except Exception:
                    self.log.exception("Worker %s: failure callback for job %s raised", self.name, job.id)
                call_exception_handlers(self._exc_handlers, job, AbandonedJobError, AbandonedJobError(), None)

    def job_abandoned(self, job: Job, retried: bool, pipe: Pipeline) -> None:
        """Add writes for a job whose worker was lost to the reaper's step (a hook: the project counts it)."""

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
        return self._recover(keys=[alive_key(name), inflight_key(name), INFLIGHT_WORKERS_KEY, DOORBELL_KEY],
                             args=[*self.prefixes, name, "own" if own else ""])

    def teardown(self) -> None:
        """Stop the heartbeat thread, give back any job taken but not started, then let RQ tidy up."""
        self._done.set()
        try:  # as a lost worker's would be, at once: it is no longer alive
            self._give_back(self.name, own=True)
            self.connection.delete(self.alive_key)
        except RedisError as exc:
            self.log.warning("Worker %s: could not give back the jobs it held (%s); the next maintenance will", self.name, exc)
        with self._unless_unavailable("its deregistration"):
            super().teardown()

    def _beat_forever(self) -> None:
        while not self._done.wait(self.lost_after / 3):
            self._beat()

    def _beat(self) -> None:
        """Say this worker is alive (busy or not) and keep its running job's execution alive; never revive one."""
        running, starting = self._running, self._starting
        try:
            with self.connection.pipeline() as pipe:
                pipe.set(self.alive_key, 1, ex=self.lost_after)
                pipe.sadd(INFLIGHT_WORKERS_KEY, self.name)
                pipe.hexists(self.key, "birth")
                if running:
                    super().heartbeat(self.worker_ttl, pipe)
                    job, execution = running
                    execution.heartbeat(job.started_job_registry, self.lost_after, pipeline=pipe)  # ZADD XX
                if starting:
                    job, tries = starting
                    for execution in list(tries):
                        execution.heartbeat(job.started_job_registry, self.lost_after, pipeline=pipe)
                registered = pipe.execute()[2]
                if not registered and self.birth_date:  # back after its registration expired (paused, cut off)
                    pipe.hset(self.key, mapping=self.serialize())
                    worker_registration.register(self, pipe)
                    pipe.expire(self.key, self.worker_ttl)
                    pipe.execute()
        except RedisError as exc:
            self._unavailable_at = time.monotonic()
            self.log.warning("Worker %s: heartbeat failed: %s", self.name, exc)

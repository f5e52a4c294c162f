"""Starts this machine's share of the fleet: WORKERS RQ worker processes on the project's queue.

Why SimpleWorker: measured here (2 cores, 500 synthetic-price jobs, 2 processes, imports
preloaded), the default forking Worker took 14.8 ms per job, SimpleWorker 3.2 ms; the job's
own work is about 1 ms, so forking per job would cost most of the time. Without preloaded
imports a forked child re-imports pandas and scikit-learn for every job (~800 ms). Running
the job in the worker process loses the fork's isolation, so this supervisor gives back what
matters: one process per core, each restarted if it dies, and RQ's job timeout still applies
(SIGALRM in-process). The worker class (jobs/worker.py, on jobs/fenced_worker.py and
jobs/recovery.py) adds heartbeats while a job runs, so a
lost worker's job runs again within seconds, and lets only a job's current attempt store its
outcome.

The heavy imports (pandas, scikit-learn, yfinance, at the top of this module and of jobs/) and
the price source are loaded once in the supervisor before forking, so every worker starts warm
and shares those pages.
"""
import datetime
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from urllib.parse import urlsplit

from exchange_calendars.errors import InvalidCalendarName
from redis import Redis
from rq import Worker

from config import LOG_FORMAT, REFUSED, WORKER_STOP_PATIENCE, Config, exit_on_bad_settings, refuse_to_start, settings_of
from jobs import analysis, tasks
from jobs.connection import connect
from jobs.job_class import SERIALIZER, never_unpickle, trends_queues
from jobs.records import REDIS_UNAVAILABLE, VERSION
from jobs.recovery import no_outage, redis_retry_waits
from jobs.sources import source_name
from jobs.worker import TrendsWorker
from scripts.procfile import stop_with_parent

log = logging.getLogger("worker")

# After a stop request, a worker still running WORKER_STOP_PATIENCE s later is told again (RQ's cold
# shutdown: its job ends as a failure, retried if it has retries left), and killed 5 s later (its job
# is then abandoned and RQ runs it again elsewhere).
KILL_AFTER = WORKER_STOP_PATIENCE + 5


def load_the_calendar() -> None:
    """Load the exchange calendar the first job would otherwise load, refusing an unknown one in words."""
    try:
        analysis.next_trading_days(datetime.date.today(), 1, Config.EXCHANGE_CALENDAR)
    except InvalidCalendarName:
        refuse_to_start(f"EXCHANGE_CALENDAR must be an exchange_calendars name such as XNYS or XLON, "
                        f"got {Config.EXCHANGE_CALENDAR!r}")


def run_worker(supervisor: int) -> None:
    """One RQ worker process of the `supervisor` process, named after this host so the dashboard shows where it runs."""
    never_unpickle()
    # Forget the supervisor's handlers: a signal that arrives before RQ installs its own must not
    # run the supervisor's code here. Until then it just ends this (still idle) process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only; it stops workers one signal at a time
    stop_with_parent(supervisor)  # a worker never runs on without its supervisor
    connection = connect(Config.REDIS_URL, Config.REDIS_SENTINEL_PASSWORD)
    wait_for_redis(connection)
    source = source_name(Config.PRICE_SOURCE)
    worker = TrendsWorker(
        trends_queues(connection, settings_of(Config)),
        connection=connection,
        serializer=SERIALIZER,
        # What the dashboard's worker list shows: where it runs, its price source and version, its process.
        name=f"{socket.gethostname()}.{source}-{VERSION}.{os.getpid()}",
        source=source,
        worker_ttl=Config.WORKER_TTL,
        maintenance_interval=Config.MAINTENANCE_INTERVAL,
        lost_after=Config.WORKER_LOST_AFTER,
        give_up_after=Config.YAHOO_GIVE_UP_AFTER,
    )
    worker.log_result_lifespan = False  # one INFO line per job is enough
    worker.work(logging_level=Config.LOG_LEVEL)


def refuse_a_mixed_fleet(connection: Redis) -> None:
    """Exit, saying how to override, if live workers at this Redis use another price source than this host's."""
    if Config.ALLOW_MIXED_SOURCES:
        return
    mine = source_name(Config.PRICE_SOURCE)
    keys = list(Worker.all_keys(connection=connection))
    pipe = connection.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "trends_source", "hostname")
    others: dict[str, set[str]] = {}
    for source, host in pipe.execute():
        if source and source.decode() != mine:
            others.setdefault(source.decode(), set()).add((host or b"?").decode())
    if others:
        fleet = "; ".join(f"{source} on {', '.join(sorted(hosts))}" for source, hosts in sorted(others.items()))
        refuse_to_start(f"refusing to start: this host's PRICE_SOURCE gives {mine!r} prices, but live workers at this "
                        f"Redis use another source ({fleet}), and one answer would mix them. Set PRICE_SOURCE to "
                        "match the fleet, stop those workers first, or set ALLOW_MIXED_SOURCES=1 to run mixed "
                        "sources anyway (each result names its source).")


def rank_below_the_rest() -> int:
    """Lower this supervisor's CPU priority by WORKER_NICE, for it and the workers it forks; return its niceness then.

    Linux weighs each session's scheduling group (autogroup) against the others before niceness counts
    within it: a supervisor that leads its own session (`make run`, a systemd unit that execs it) sets
    its group's niceness to WORKER_NICE too (an absolute value, where os.nice adds to the niceness it
    started with). Started from a shell, it shares the shell's group, and niceness alone counts.
    """
    niceness = os.nice(Config.WORKER_NICE)
    if Config.WORKER_NICE and os.getsid(0) == os.getpid() and os.path.exists("/proc/self/autogroup"):
        for attempt in range(2):  # unprivileged, Linux takes one autogroup change per 100 ms on the host
            try:
                with open("/proc/self/autogroup", "w") as group:
                    group.write(str(Config.WORKER_NICE))
                break
            except OSError as exc:
                if attempt or exc.errno != errno.EAGAIN:
                    log.warning("the workers' scheduling group keeps its priority: %s", exc)
                    break
                time.sleep(0.1)
    return niceness


def wait_for_redis(connection: Redis) -> None:
    """Return once Redis answers: a worker started before Redis, or while it restarts, waits instead of crashing.

    A refused password ends the process at once (exit 78, saying so): waiting would not fix it.
    """
    for wait in redis_retry_waits():
        try:
            connection.ping()
            return
        except REDIS_UNAVAILABLE as exc:
            no_outage(exc)
            log.warning("Redis unreachable (%s); trying again in %g s", exc, wait)
            time.sleep(wait)


class Supervisor:
    """Keeps `count` worker processes running; on SIGINT/SIGTERM asks each to finish its job and stop."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.context = multiprocessing.get_context("fork")
        self.workers: list[BaseProcess] = []
        self.stop_requested_at: float | None = None
        self.escalations = [(WORKER_STOP_PATIENCE, signal.SIGTERM), (KILL_AFTER, signal.SIGKILL)]
        self.refused = False  # a worker exited refusing its settings (a wrong Redis password): exit so too

    def run(self) -> None:
        """Tend the workers until a stop was requested and every worker has exited."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        while True:
            self.reap()
            if self.stop_requested_at is None:
                self.fill()
            elif not self.workers:
                return
            else:
                self.escalate()
            time.sleep(0.2)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Ask every worker to stop after its current job (the first request only)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            log.info("stopping %d workers after their current jobs", len(self.workers))
            self.signal_workers(signal.SIGTERM)

    def reap(self) -> None:
        """Forget exited workers, saying so unless they were asked to stop; one refused as configured stops them all."""
        for process in [p for p in self.workers if not p.is_alive()]:
            process.join()
            self.workers.remove(process)
            if process.exitcode == REFUSED:  # it said why; another would be refused too
                self.refused = True
                self.request_stop(signal.SIGTERM, None)
            elif self.stop_requested_at is None:
                log.warning("worker %d exited with code %s; starting another", process.pid, process.exitcode)

    def fill(self) -> None:
        """Start workers until there are `count`."""
        while self.stop_requested_at is None and len(self.workers) < self.count:  # a stop may come in between
            process = self.context.Process(target=run_worker, args=(os.getpid(),), name="rq-worker")
            process.start()
            self.workers.append(process)

    def escalate(self) -> None:
        """Signal again, harder, the workers still running long after the stop request."""
        waited = time.monotonic() - self.stop_requested_at
        if self.escalations and waited > self.escalations[0][0]:
            after, signum = self.escalations.pop(0)
            log.warning("workers still running %d s after the stop request; sending %s", after, signum.name)
            self.signal_workers(signum)

    def signal_workers(self, signum: int) -> None:
        """Send `signum` to every live worker."""
        for process in self.workers:
            if process.is_alive():
                os.kill(process.pid, signum)


def main() -> None:
    """Check the settings, warm up, and supervise WORKERS worker processes until stopped."""
    # To stdout, line by line, for journald, Procfile runners and `make worker` alike; RQ uses this handler too.
    exit_on_bad_settings()
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=Config.LOG_LEVEL, stream=sys.stdout, format=LOG_FORMAT)
    load_the_calendar()
    connection = connect(Config.REDIS_URL, Config.REDIS_SENTINEL_PASSWORD)
    wait_for_redis(connection)
    refuse_a_mixed_fleet(connection)  # before the price source: a refused host makes no call to Yahoo
    connection.close()  # the workers open their own
    tasks.price_source()  # built once here (Yahoo's login included) and inherited by every worker
    niceness = rank_below_the_rest()
    redis_host = urlsplit(Config.REDIS_URL).hostname  # not the whole URL: it may hold a password
    log.info("starting %d workers against Redis at %s (price source %s, niceness %d)", Config.WORKERS, redis_host,
             Config.PRICE_SOURCE, niceness)
    supervisor = Supervisor(Config.WORKERS)
    supervisor.run()
    if supervisor.refused:
        raise SystemExit(REFUSED)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took the signal (waiting for Redis): no traceback
        raise SystemExit(130) from None

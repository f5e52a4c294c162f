"""Starts this machine's share of the fleet: WORKERS RQ worker processes on the project's queue.

Why SimpleWorker: measured here (2 cores, 500 synthetic-price jobs, 2 processes, imports
preloaded), the default forking Worker took 14.8 ms per job, SimpleWorker 3.2 ms; the job's
own work is about 1 ms, so forking per job would cost most of the time. Without preloaded
imports a forked child re-imports pandas and scikit-learn for every job (~800 ms). Running
the job in the worker process loses the fork's isolation, so this supervisor gives back what
matters: one process per core, each restarted if it dies, and RQ's job timeout still applies
(SIGALRM in-process). The worker class (jobs/worker.py) adds heartbeats while a job runs, so a
lost worker's job runs again within seconds, and lets only a job's current attempt store its
outcome.

The heavy imports (pandas, scikit-learn, yfinance) and the price source are loaded once in
the supervisor before forking, so every worker starts warm and shares those pages.
"""
import datetime
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

from config import Config, check_settings

log = logging.getLogger("worker")


def preload() -> None:
    """Import everything a job touches, so no job pays for it."""
    import pandas  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import yfinance  # noqa: F401

    from jobs import analysis, tasks

    tasks.price_source()
    analysis.next_trading_days(datetime.date.today(), 1, Config.EXCHANGE_CALENDAR)  # loads the exchange calendar


def run_worker() -> None:
    """One RQ worker process, named after this host so the dashboard shows where it runs."""
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    from jobs.job_class import TrendsJob, never_unpickle
    from jobs.worker import TrendsWorker

    never_unpickle()
    # Forget the supervisor's handlers: a signal that arrives before RQ installs its own must not
    # run the supervisor's code here. Until then it just ends this (still idle) process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only; it stops workers one signal at a time
    connection = Redis.from_url(Config.REDIS_URL)
    queues = [  # in priority order: RQ takes from the first non-empty queue
        Queue(name, connection=connection, serializer=JSONSerializer, job_class=TrendsJob)
        for name in (Config.INTERACTIVE_QUEUE, Config.BULK_QUEUE)
    ]
    worker = TrendsWorker(
        queues,
        connection=connection,
        serializer=JSONSerializer,
        name=f"{socket.gethostname()}.{os.getpid()}",
        worker_ttl=Config.WORKER_TTL,
        maintenance_interval=Config.MAINTENANCE_INTERVAL,
        lost_after=Config.WORKER_LOST_AFTER,
    )
    worker.log_result_lifespan = False  # one INFO line per job is enough
    worker.work(logging_level=Config.LOG_LEVEL)


def supervise(count: int) -> None:
    """Keep `count` workers running; on SIGINT/SIGTERM ask each to finish its job and stop.

    A worker still running JOB_TIMEOUT + WORKER_LOST_AFTER s after that is told again (RQ's cold
    shutdown: its job ends as a failure, retried if it has retries left), and killed 5 s later (its
    job is then abandoned and RQ runs it again elsewhere).
    """
    context = multiprocessing.get_context("fork")
    workers: list = []
    stop_requested_at = None
    patience = Config.JOB_TIMEOUT + Config.WORKER_LOST_AFTER

    def signal_workers(signum: int) -> None:
        for process in workers:
            if process.is_alive():
                os.kill(process.pid, signum)

    def stop(signum, frame):
        nonlocal stop_requested_at
        if stop_requested_at is None:
            stop_requested_at = time.monotonic()
            log.info("stopping %d workers after their current jobs", len(workers))
            signal_workers(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    escalations = [(patience, signal.SIGTERM), (patience + 5, signal.SIGKILL)]
    while True:
        for process in [p for p in workers if not p.is_alive()]:
            process.join()
            workers.remove(process)
            if stop_requested_at is None:
                log.warning("worker %d exited with code %s; starting another", process.pid, process.exitcode)
        if stop_requested_at is not None:
            if not workers:
                return
            if escalations and time.monotonic() - stop_requested_at > escalations[0][0]:
                log.warning("workers still running %d s after the stop request; sending %s", escalations[0][0],
                            escalations[0][1].name)
                signal_workers(escalations.pop(0)[1])
        while stop_requested_at is None and len(workers) < count:
            process = context.Process(target=run_worker, name="rq-worker")
            process.start()
            workers.append(process)
        time.sleep(0.2)


def main() -> None:
    # To stdout, line by line, for journald, Procfile runners and `make worker` alike; RQ uses this handler too.
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(
        level=Config.LOG_LEVEL, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        check_settings(vars(Config))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    preload()
    redis_host = urlsplit(Config.REDIS_URL).hostname  # not the whole URL: it may hold a password
    log.info("starting %d workers against Redis at %s (price source %s)", Config.WORKERS, redis_host, Config.PRICE_SOURCE)
    supervise(Config.WORKERS)


if __name__ == "__main__":
    main()

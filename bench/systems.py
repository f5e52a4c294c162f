"""The two systems `make bench` drives: this project, and the seed's Flask + Celery design as its peer.

Each runs against a Redis server of its own (so command counts are its own), on free ports, and
exposes the process ids of its web, worker and Redis processes, so CPU time can be counted per kind.
"""
import os
import subprocess
import time
from dataclasses import dataclass, field

from redis import Redis

from config import ROOT, Config
from tests.conftest import RedisServer, WebServer, Workers, children, free_port, http_status, wait_until

# The only settings the benchmark changes (the report lists them): one request may carry 1000 symbols,
# the rate budgets let the run through, and prices are synthetic (no network here, as under `make demo`).
# Every other setting is the shipped default a user gets.
CHANGED = {"MAX_SYMBOLS": 1000, "RATE_LIMIT_SYMBOLS": "1000000/minute", "RATE_LIMIT_POLL": "1000000/minute",
           "PRICE_SOURCE": "synthetic"}
PEER_DIR = os.environ.get("BENCH_PEER_DIR") or os.path.join(ROOT, "..", "shared", "peers", "celery-seed")


@dataclass
class System:
    """A running system: its URL, its Redis, and what to stop."""

    name: str
    url: str
    redis: RedisServer
    stops: list = field(default_factory=list)

    def client(self) -> Redis:
        """A client of this system's Redis."""
        return Redis.from_url(self.redis.url)

    def stop(self) -> None:
        """Stop every process this system started, Redis last (once: later calls do nothing)."""
        while self.stops:
            self.stops.pop()()
        if self.redis.process.poll() is None:
            self.redis.stop()


class Project(System):
    """This project: gunicorn, `worker.py` with `workers` processes (one per core by default), its own Redis."""

    def __init__(self, scratch: str, workers: int = Config.WORKERS, name: str = "project", **settings: object):
        redis = RedisServer(os.path.join(scratch, "project-redis"))
        redis.start()
        self.settings = {**CHANGED, **settings}
        # The web app's default number of processes (the test fixture's is 1).
        self.web = WebServer(redis.url, os.path.join(scratch, "web.log"), WEB_PROCESSES=Config.WEB_PROCESSES,
                             **self.settings)
        super().__init__(name, self.web.url, redis, [self.web.stop])
        self.scratch, self.workers = scratch, None
        self.start_workers(workers)

    def stop_workers(self) -> None:
        """Stop the worker processes (SIGTERM: each finishes its job first)."""
        if self.workers:
            self.workers.stop()
            self.stops.remove(self.workers.stop)
            self.workers = None

    def start_workers(self, count: int, **settings: object) -> None:
        """Replace the worker processes with `count` new ones."""
        self.stop_workers()
        log = os.path.join(self.scratch, f"workers-{count}-{time.monotonic_ns()}.log")
        self.workers = Workers(self.redis.url, log, count, **{**self.settings, **settings})
        self.stops.append(self.workers.stop)

    def pids(self) -> dict[str, list[int]]:
        """Gunicorn's worker processes, the worker processes (not their supervisor), Redis."""
        return {"web": children(self.web.process.pid),
                "worker": [int(name.rsplit(".", 1)[1]) for name in self.workers.names()],
                "redis": [self.redis.process.pid]}


class Peer(System):
    """The seed's design: app2.py (Flask's threaded server) and a Celery worker with concurrency 2."""

    def __init__(self, scratch: str, python: str):
        if not os.path.exists(os.path.join(PEER_DIR, "app2.py")):
            raise SystemExit(f"the Celery peer is not at {PEER_DIR} (../shared/peers/celery-seed); set BENCH_PEER_DIR")
        python = os.path.abspath(python)  # it runs from the peer's folder
        redis = RedisServer(os.path.join(scratch, "peer-redis"))
        redis.start()
        port = free_port()
        env = dict(os.environ, REDIS_URL=redis.url, PORT=str(port))
        log = open(os.path.join(scratch, "peer.log"), "w")
        # As the seed's README runs it: concurrency 2, at the shell's priority.
        celery = [os.path.join(os.path.dirname(python), "celery"), "-A", "app2.celery", "worker", "--concurrency", "2",
                  "--loglevel=warning"]
        self.worker = subprocess.Popen(celery, cwd=PEER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.web = subprocess.Popen([python, "app2.py"], cwd=PEER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        super().__init__("peer", f"http://127.0.0.1:{port}", redis, [log.close, self._stop_processes])
        wait_until(lambda: http_status(self.url + "/get_trends") == 405, timeout=30, what="the peer's web app")
        wait_until(lambda: len(children(self.worker.pid)) == 2, timeout=60, what="the peer's two Celery processes")

    def _stop_processes(self) -> None:
        for process in (self.web, self.worker):
            process.terminate()
            process.wait(timeout=30)

    def pids(self) -> dict[str, list[int]]:
        """Flask's process, Celery's pool processes and its consumer (the master), Redis."""
        return {"web": [self.web.pid], "worker": [self.worker.pid, *children(self.worker.pid)],
                "redis": [self.redis.process.pid]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "Rss") -> float:
    """Resident memory; field "Pss" shares pages among the processes using them (forked workers share much)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith(field + ":")) / 1024

"""Fixtures: a real Redis-compatible server on a free loopback port, real RQ worker processes."""
import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pandas as pd
import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import Worker

from config import ROOT, Config
from jobs import tasks
from jobs.connection import connect
from jobs.fair import staged_queues
from jobs.job_class import SERIALIZER
from jobs.records import record_key
from jobs.sources import CsvSource, SyntheticSource
from jobs.worker import TrendsWorker
from scripts.procfile import commands
from scripts.redis_server import answers, group_server_lines, server_command
from scripts.sentinel import group_url, sentinel_command
from webapp import create_app

pytest_plugins = ["tests.browser"]  # the browser fixtures, for every module that drives the page

def analysis_jobs(redis: Redis, analysis_id: str) -> list[Job]:
    """The RQ jobs of an async analysis, as its record names them, through RQ's public API."""
    job_ids = json.loads(redis.hget(record_key(analysis_id), "jobs"))
    return Job.fetch_many(job_ids, connection=redis, serializer=JSONSerializer)


def waiting_job_ids(redis: Redis, queue) -> list[str]:
    """Every job waiting for `queue`: its own list first (taken first), then each client's staged queue, in turn order."""
    return queue.get_job_ids() + [job_id for staged in staged_queues(redis, queue) for job_id in staged.get_job_ids()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class RedisServer:
    """A redis-server/valkey-server process the tests own; can be stopped and started again (same port, same data).

    options go to scripts/redis_server.server_command (tls, acl_file, binary); `credentials`
    ("user:password") go into `url`, which the server must answer at.
    """

    def __init__(self, data_dir: str, credentials: str = "", **options):
        self.port = free_port()
        self.data_dir = data_dir
        self.options = options
        tls = options.get("tls")
        self._scheme, self._query = ("rediss", f"?ssl_ca_certs={tls['ca']}") if tls else ("redis", "")
        self.url = self.url_for(credentials)
        self.process = None

    def url_for(self, credentials: str = "") -> str:
        """This server's URL, as the user of `credentials` ("user:password", or none)."""
        return f"{self._scheme}://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/0{self._query}"

    def start(self) -> None:
        command = server_command(self.port, self.data_dir, **self.options)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(lambda: answers(self.url), what="the Redis server to answer")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis-compatible server on a free loopback port for the whole session."""
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client of the session's server, flushed before and after each test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.flushall()


@pytest.fixture
def app(redis_server, redis_client):
    """The web app wired to the test Redis, with the default settings."""
    return create_app({"REDIS_URL": redis_server.url, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


def worker_of(app, give_up_after: int = 600) -> TrendsWorker:
    """The project's worker class in this process, on the app's queues, as the tests run it."""
    return TrendsWorker(app.queues, connection=app.redis, serializer=SERIALIZER, lost_after=3, source="synthetic",
                        give_up_after=give_up_after)


@pytest.fixture
def run_jobs(monkeypatch):
    """Runs queued jobs in this process with the project's worker class (RQ's testing path), on synthetic prices.

    run_jobs(app, max_jobs=None) works until the queues are empty or max_jobs ran.
    """
    monkeypatch.setattr(tasks, "_price_source", SyntheticSource())

    def run(app, max_jobs: int | None = None) -> None:
        worker_of(app).work(burst=True, max_jobs=max_jobs, logging_level="WARNING")

    return run


@pytest.fixture
def csv_jobs(run_jobs, monkeypatch, price_dir):
    """run_jobs, on the CSV price files in price_dir (as the `workers` fixture's processes read them)."""
    monkeypatch.setattr(tasks, "_price_source", CsvSource(str(price_dir)))
    return run_jobs


def answer_while_working(app, run_jobs, body: dict | None = None, ask=None) -> dict:
    """POST `body` to /get_trends (or call `ask`) from a thread while this thread runs the jobs it queues; return the answer."""
    answer = {}
    ask = ask or (lambda: app.test_client().post("/get_trends", json=body).json)
    asking = threading.Thread(target=lambda: answer.update(ask()))
    asking.start()
    while asking.is_alive():
        run_jobs(app)
        asking.join(0.02)
    return answer


@pytest.fixture
def price_dir(tmp_path):
    """A folder for CSV price files that the workers read (PRICE_SOURCE=csv:DIR)."""
    return tmp_path


def write_prices(folder, symbol, days, closes, adj_close=True):
    """A Yahoo export CSV; with adj_close=False, the Date,Open,High,Low,Close,Volume form."""
    frame = pd.DataFrame({"Date": [d.isoformat() for d in days], "Open": closes, "High": closes, "Low": closes, "Close": closes})
    if adj_close:
        frame["Adj Close"] = closes
    frame["Volume"] = 1000
    frame.to_csv(folder / f"{symbol}.csv", index=False)


def weekdays(start: str, count: int) -> list[dt.date]:
    return [d.date() for d in pd.bdate_range(start, periods=count)]


def random_walk(seed: int, count: int = 252) -> np.ndarray:
    """Seeded daily closes around 50, to four decimals (so they survive a CSV round trip)."""
    rng = np.random.default_rng(seed)
    return np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.02, count))), 4)


@pytest.fixture
def prices(price_dir):
    """Price files for AAPL, MSFT and BRK-B; returns symbol → closes."""
    days = weekdays("2025-01-02", 252)
    series = {symbol: random_walk(seed) for seed, symbol in enumerate(["AAPL", "MSFT", "BRK-B"])}
    for symbol, closes in series.items():
        write_prices(price_dir, symbol, days, closes)
    return series


class Workers:
    """A real `worker.py` supervisor with its worker processes, started with extra settings."""

    def __init__(self, redis_url: str, log_path, count: int = 2, **settings):
        env = dict(os.environ, REDIS_URL=redis_url, WORKERS=str(count), **{k: str(v) for k, v in settings.items()})
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(commands()["worker"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.client = connect(redis_url)  # a Sentinel group's URL too
        try:
            wait_until(lambda: len(self.names()) >= count, timeout=30, what=f"{count} workers to register")
        except AssertionError:
            self.kill()
            raise

    def log_text(self) -> str:
        self.log.flush()
        with open(self.log.name) as log:
            return log.read()

    def names(self) -> set[str]:
        return {worker.name for worker in Worker.all(connection=self.client)}

    def stop(self) -> int:
        """SIGTERM, as systemd or Ctrl-C would; returns the supervisor's exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self.log.close()

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers: leave no orphan behind."""
        subprocess.run(["pkill", "-KILL", "-P", str(self.process.pid)])
        self.process.kill()
        self.process.wait()
        self.log.close()


@pytest.fixture
def start_workers(tmp_path):
    """Starts worker supervisors: start_workers(redis_url, count, **settings); all are stopped at the end."""
    started: list[Workers] = []

    def start(redis_url: str, count: int = 1, **settings) -> Workers:
        started.append(Workers(redis_url, tmp_path / f"workers{len(started)}.log", count, **settings))
        return started[-1]

    yield start
    for workers in started:
        workers.stop()  # also closes the log of one a test killed


@pytest.fixture
def workers(redis_server, redis_client, price_dir, tmp_path, start_workers):
    """Two real worker processes against the test Redis, reading CSV prices from price_dir."""
    return start_workers(redis_server.url, 2, PRICE_SOURCE=f"csv:{price_dir}", YFINANCE_CACHE_DIR=tmp_path / "yfinance")


class SentinelGroup:
    """A Sentinel group as `make run HA=1` starts one: three servers, three sentinels, the shipped settings, on loopback."""

    PASSWORD = "sentinel-test-password"

    def __init__(self, root):
        self.servers: list[RedisServer] = []
        for n in range(3):
            replicaof = f"127.0.0.1:{self.servers[0].port}" if n else ""
            self.servers.append(RedisServer(str(root / f"server{n}"), f":{self.PASSWORD}", password=self.PASSWORD,
                                            extra=group_server_lines(self.PASSWORD, replicaof)))
            self.servers[-1].start()
        for replica in self.servers[1:]:
            wait_until(lambda replica=replica: Redis.from_url(replica.url).info("replication").get("master_link_status")
                       == "up", timeout=30, what="each replica to sync with the primary")
        self.sentinels: list[tuple[int, subprocess.Popen]] = []
        for n in range(3):
            port = free_port()
            command = sentinel_command(port, str(root / f"sentinel{n}"), f"127.0.0.1:{self.servers[0].port}", self.PASSWORD)
            self.sentinels.append((port, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
        self.url = group_url(self.PASSWORD, [f"127.0.0.1:{port}" for port, _ in self.sentinels])
        wait_until(lambda: all(self._sees_group(port) for port, _ in self.sentinels), timeout=60,
                   what="every sentinel to know the primary, its replicas and the other sentinels")

    @staticmethod
    def _sees_group(port: int) -> bool:
        try:
            sentinel = Redis(port=port)
            service = Config.SENTINEL_SERVICE
            return len(sentinel.sentinel_slaves(service)) == 2 and len(sentinel.sentinel_sentinels(service)) == 2
        except Exception:
            return False

    def primary_port(self) -> int:
        for port, process in self.sentinels:
            if process.poll() is None:
                return int(Redis(port=port).sentinel_get_master_addr_by_name(Config.SENTINEL_SERVICE)[1])
        raise AssertionError("no sentinel is running")

    def primary_server(self) -> RedisServer:
        """The server the sentinels call primary now."""
        port = self.primary_port()
        return next(server for server in self.servers if server.port == port)

    def primary(self) -> Redis:
        """A client of the server the sentinels call primary now."""
        return Redis(port=self.primary_port(), password=self.PASSWORD)

    def stop(self) -> None:
        for _, process in self.sentinels:
            process.kill()
            process.wait()
        for server in self.servers:
            if server.process and server.process.poll() is None:
                server.stop()


class WebServer:
    """The real web app under gunicorn on a free port, with extra settings."""

    def __init__(self, redis_url: str, log_path, **settings):
        port = free_port()
        settings = {"WEB_PROCESSES": 1, **settings}
        env = dict(os.environ, REDIS_URL=redis_url, HOST="127.0.0.1", PORT=str(port), **{k: str(v) for k, v in settings.items()})
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(commands()["web"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _http_answers(self.url), timeout=20, what="gunicorn to answer")
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        """Quick shutdown (SIGQUIT): SIGTERM's graceful one waits up to the keep-alive time for browsers' idle connections."""
        self.process.send_signal(signal.SIGQUIT)
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def web_server(redis_server, redis_client, tmp_path):
    """The real web app under gunicorn; yields its base URL."""
    server = WebServer(redis_server.url, tmp_path / "web.log")
    yield server.url
    server.stop()


def children(pid: int) -> list[int]:
    """The child processes of `pid`."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, and not a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def post_from(address: str, base_url: str, path: str, body: dict, timeout: float = 120) -> tuple[int, dict, dict]:
    """POST JSON from a client address of our own (loopback holds all of 127/8), as a separate machine would."""
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout, source_address=(address, 0))
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 30) -> dict:
    """A JSON request to a server the tests started, as a client outside the app would make it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def http_status(url: str, timeout: float = 2) -> int | None:
    """The HTTP status a GET of `url` gets, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except OSError:
        return None


def _http_answers(url: str) -> bool:
    return http_status(url, timeout=1) == 200

"""`make run` (scripts/run.py) keeps the whole system up: its Redis killed with SIGKILL comes back, nothing queued is lost."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError
from rq import Worker

from tests.conftest import ROOT, children, free_port, http_json, http_status, process_running, wait_until


@pytest.fixture
def make_run(tmp_path, request):
    """scripts/run.py as `make demo` runs it, on free ports, with its own Redis data folder (after a prefix, if given)."""
    redis_port, web_port = free_port(), free_port()
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", REDIS_DATA_DIR=str(tmp_path / "redis"),
               PORT=str(web_port), PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS="300", WORKERS="2",
               YFINANCE_CACHE_DIR=str(tmp_path / "yf"))
    env.pop("WORKER_NICE", None)  # its default
    log = open(tmp_path / "run.log", "w")
    prefix = getattr(request, "param", [])  # such as ["nohup"]
    process = subprocess.Popen([*prefix, sys.executable, "-m", "scripts.run"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: http_status(url + "/healthz") == 200, timeout=60, what="make run to serve with live workers")
        password = (tmp_path / "redis" / "password").read_text()
        yield process, url, env["REDIS_URL"].replace("redis://", f"redis://:{password}@")
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C would
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _redis_pid(redis_url: str) -> int:
    """The process id of the Redis server make run started, as the server itself reports it."""
    return Redis.from_url(redis_url).info("server")["process_id"]


def _priority(pid: int) -> tuple[int, str, int]:
    """A process's niceness, and the scheduling group (autogroup) Linux weighs it in with that group's niceness."""
    try:
        with open(f"/proc/{pid}/autogroup") as group:
            name, _, group_nice = group.read().split()  # "/autogroup-42 nice 0"
    except FileNotFoundError:  # a kernel without autogroups: niceness counts machine-wide
        name, group_nice = "", "0"
    return os.getpriority(os.PRIO_PROCESS, pid), name, int(group_nice)


def _succeeds(url: str) -> bool:
    try:
        return http_json("POST", url + "/get_trends", {"symbols": ["AFTER"]}, timeout=40)["status"] == "success"
    except OSError:  # 503 while Redis is down, or a refused connection
        return False


def test_make_run_gives_its_redis_a_password_only_its_owner_can_read(make_run, tmp_path):
    _, url, redis_url = make_run
    password_file = tmp_path / "redis" / "password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AuthenticationError):  # no password: refused
        Redis.from_url(redis_url.replace(f":{password_file.read_text()}@", "")).get("rq:queues")
    assert Redis.from_url(redis_url).ping()
    assert http_json("POST", url + "/get_trends", {"symbols": ["AAPL"]})["status"] == "success", "web app and workers have it"
    said = (tmp_path / "run.log").read_text()
    assert f"running at {url}/  (prices: synthetic; Ctrl-C stops it)" in said, "the URL, once it answers, and the source"


def test_under_make_run_the_workers_yield_the_cpu_to_the_web_app_and_redis(make_run):
    """WORKER_NICE's default, 10, where it counts: the workers and their scheduling group rank below the web app and Redis."""
    run, url, redis_url = make_run
    own = os.getpriority(os.PRIO_PROCESS, run.pid)
    if own > 9:
        pytest.skip("the tests run too nice for the workers to be 10 nicer")
    web = next(pid for pid in children(run.pid) if "gunicorn" in _command_line(pid))
    connection = Redis.from_url(redis_url)
    wait_until(lambda: len(Worker.all(connection=connection)) == 2, what="both workers to register")
    workers = [_priority(worker.pid) for worker in Worker.all(connection=connection)]
    others = [_priority(pid) for pid in (web, *children(web), _redis_pid(redis_url))]
    assert {nice for nice, _, _ in others} == {own} and {nice for nice, _, _ in workers} == {own + 10}
    if workers[0][1]:  # Linux weighs groups first: the workers' is apart (each part has its own session) and 10 nicer
        assert {group for _, group, _ in workers}.isdisjoint(group for _, group, _ in others)
        assert {group_nice for _, _, group_nice in workers} == {group_nice + 10 for _, _, group_nice in others}


def test_make_run_stops_every_part_on_sighup(make_run):
    """SIGHUP (its terminal closed) stops the parts in order, as Ctrl-C does, instead of leaving them running."""
    run, _, redis_url = make_run
    descendants = _parts_and_their_children(run)
    assert _redis_pid(redis_url) in descendants
    run.send_signal(signal.SIGHUP)
    assert run.wait(timeout=60) == 0
    wait_until(lambda: not any(process_running(pid) for pid in descendants), what="every part of make run to exit")


def test_make_run_killed_leaves_no_part_running(make_run):
    """SIGKILL (the OOM killer) cannot be caught: each part stops by itself, and a new make run starts clean."""
    run, _, _ = make_run
    descendants = _parts_and_their_children(run)
    run.kill()
    try:
        wait_until(lambda: not any(process_running(pid) for pid in descendants), timeout=60,
                   what="every part of the killed make run to stop")
    finally:  # never leave one running for the tests after this one
        subprocess.run(["kill", "-KILL", *map(str, descendants)], stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("make_run", [["nohup"]], indirect=True)
def test_make_run_under_nohup_outlives_its_terminal(make_run, tmp_path):
    run, url, _ = make_run
    run.send_signal(signal.SIGHUP)
    time.sleep(1)  # room for it to (wrongly) stop: a wrong pass at worst, never a false failure
    assert run.poll() is None and http_status(url + "/healthz") == 200
    assert "stopping" not in (tmp_path / "run.log").read_text()


def _parts_and_their_children(run: subprocess.Popen) -> list[int]:
    parts = children(run.pid)
    return [*parts, *(child for part in parts for child in children(part))]


def _command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as command:
        return command.read().decode(errors="replace")


def test_redis_killed_under_make_run_comes_back_and_loses_no_queued_job(make_run):
    run, url, redis_url = make_run
    symbols = [f"Q{i}" for i in range(30)]  # 30 × 300 ms on 2 workers: still queued when Redis dies
    status_url = url + http_json("POST", url + "/api/analyses", {"symbols": symbols})["status_url"]
    time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    assert http_json("GET", status_url)["done"] < len(symbols), "jobs were still queued at the kill"
    os.kill(_redis_pid(redis_url), signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: _succeeds(url), timeout=30, what="a new request to succeed after Redis was killed")
    remaining = 30 - (time.monotonic() - killed_at)
    wait_until(lambda: http_json("GET", status_url)["state"] == "finished", timeout=max(remaining, 0.1),
               what="every job queued before the kill to be processed")
    assert run.poll() is None, "make run itself kept running"
    assert http_json("GET", status_url)["done"] == len(symbols)


def test_make_run_with_its_port_taken_stops_at_once_naming_the_port_and_the_setting(tmp_path):
    """Another program on PORT: no "running at" pointing at it, no web app restarted forever."""
    with socket.create_server(("127.0.0.1", 0)) as other_program:
        port = other_program.getsockname()[1]
        env = dict(os.environ, PORT=str(port), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                   REDIS_DATA_DIR=str(tmp_path / "redis"), PRICE_SOURCE="synthetic")
        done = subprocess.run([sys.executable, "-m", "scripts.run"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and "set PORT" in done.stderr, done.stderr[-500:]
    assert "running at" not in done.stdout and not (tmp_path / "redis").exists(), "nothing was started"

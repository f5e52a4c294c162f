"""`make run`: the whole system on one machine — Redis (unless one answers), workers, web app — kept running.

A part that exits is started again after a backoff (0.5 s, doubling to 30 s; reset once it has
run for a minute): Redis from its append-only file, while the web app and the workers stay up and
reconnect by themselves. Ctrl-C stops the web app first, then the workers (after their current
jobs), then Redis.
"""
import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from urllib.parse import quote, unquote, urlsplit

from config import ROOT, WORKER_STOP_PATIENCE, Config, exit_on_bad_settings, is_loopback
from jobs.connection import is_sentinel_url
from scripts.procfile import commands, stop_with_parent
from scripts.redis_server import answers, first_start, group_server_lines, refuse_if_login_refused, server_command
from scripts.sentinel import group_url, open_without_a_password, sentinel_command

WEB_START_TIMEOUT = 30  # seconds the web app has to answer before the URL is printed (or its absence said)

FIRST_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 0.5, 30.0, 60.0


def say(text: str) -> None:
    """Print a line for the person at the terminal, if it is still there: a closed one must not stop the shutdown."""
    try:
        print(text, flush=True)
    except OSError:
        pass


class Part:
    """One supervised process of the system, restarted with backoff whenever it exits."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name, self.command = name, command
        self.backoff = FIRST_BACKOFF
        self.restart_at: float | None = None
        self.start()

    def start(self) -> None:
        """Start the process in its own session: the terminal's Ctrl-C comes to this script, which stops the parts in order.

        Away from the terminal, a part is neither stopped for writing to it (`stty tostop`) nor hung up
        with it; it stops if this script is killed. (The workers rank their session's scheduling group
        below the others: worker.py.)
        """
        supervisor = os.getpid()
        self.process = subprocess.Popen(self.command, cwd=ROOT, start_new_session=True,
                                        preexec_fn=lambda: stop_with_parent(supervisor))
        self.started_at = time.monotonic()
        self.restart_at = None

    def tend(self) -> None:
        """Schedule a restart once the process has exited; start it when its backoff has passed."""
        if self.restart_at is None and self.process.poll() is not None:
            ran_for = time.monotonic() - self.started_at
            self.backoff = FIRST_BACKOFF if ran_for > STABLE_AFTER else min(self.backoff * 2, MAX_BACKOFF)
            self.restart_at = time.monotonic() + self.backoff
            say(f"{self.name} exited with code {self.process.returncode}; starting it again in {self.backoff:g} s")
        elif self.restart_at is not None and time.monotonic() >= self.restart_at:
            self.start()

    def stop(self) -> None:
        """Ask the process to stop; kill it if it is still running well after the workers' stop patience."""
        if self.process.poll() is None:
            say(f"stopping {self.name}…")
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WORKER_STOP_PATIENCE + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def with_local_password(url: str, data_dir: str) -> str:
    """`url` with the password of the Redis make run starts: made once, kept in DATA_DIR/password (mode 600)."""
    parts = urlsplit(url)
    if parts.password:
        return url
    path = os.path.join(data_dir, "password")
    os.makedirs(data_dir, exist_ok=True)
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as new:
            new.write(secrets.token_urlsafe(32))
    except FileExistsError:
        pass
    with open(path) as kept:
        password = kept.read().strip()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 address keeps its brackets
    netloc = f"{parts.username or ''}:{quote(password, safe='')}@{host}:{parts.port or 6379}"
    return parts._replace(netloc=netloc).geturl()


def wait_for_redis(redis: Part) -> None:
    """Return once the Redis just started answers; exit if it died or stays silent for 10 s."""
    for _ in range(100):
        if answers(os.environ["REDIS_URL"]):
            return
        if redis.process.poll() is not None:
            raise SystemExit("the Redis server exited at start; see its output above")
        time.sleep(0.1)
    raise SystemExit("the Redis server did not answer within 10 s")


def start_redis_unless_one_answers() -> Part | None:
    """Start this machine's Redis (with a password) unless REDIS_URL already answers; exit if it is another host's."""
    if answers(Config.REDIS_URL):
        return None
    if is_sentinel_url(Config.REDIS_URL):
        refuse_if_login_refused(Config.REDIS_URL)
        raise SystemExit("no primary answers for the Sentinel group REDIS_URL names; start the group, or check its "
                         "sentinels and service name")
    url = urlsplit(Config.REDIS_URL)
    if url.password or not is_loopback(url.hostname or "127.0.0.1"):  # not ours to give a password to
        refuse_if_login_refused(Config.REDIS_URL)
    if url.scheme == "unix":
        raise SystemExit(f"no Redis answers at the socket {url.path}; make run starts its own Redis on TCP only")
    host = url.hostname or "127.0.0.1"
    if not is_loopback(host):
        raise SystemExit(f"no Redis answers at {host}; start it there, or point REDIS_URL at this machine")
    # Our own Redis asks for a password: the workers and web app started below are given it.
    os.environ["REDIS_URL"] = with_local_password(Config.REDIS_URL, Config.REDIS_DATA_DIR)
    if answers(os.environ["REDIS_URL"]):  # still running from an earlier make run
        return None
    refuse_if_login_refused(os.environ["REDIS_URL"])  # one answers there, with another password
    redis = Part("redis", commands()["redis"])
    wait_for_redis(redis)
    return redis


def start_sentinel_group() -> list[Part]:
    """Start a primary, two replicas and three sentinels on this machine (`make run HA=1`); point REDIS_URL at them.

    The servers listen on REDIS_URL's port and the two after it, the sentinels on SENTINEL_PORT and
    the two after it, each with its data in REDIS_DATA_DIR. The password is the one `make run` keeps.
    """
    url = urlsplit(Config.REDIS_URL)
    if is_sentinel_url(Config.REDIS_URL) or not is_loopback(url.hostname or "127.0.0.1"):
        raise SystemExit("make run HA=1 starts its own Sentinel group on this machine: leave REDIS_URL at its "
                         "redis://127.0.0.1:PORT/0 form (PORT is the first server's)")
    password = unquote(urlsplit(with_local_password(Config.REDIS_URL, Config.REDIS_DATA_DIR)).password or "")
    host, first = advertised_address(), url.port or 6379
    parts = []
    for n in range(3):  # the first server starts as the primary; the sentinels may make another one later
        data_dir = os.path.join(Config.REDIS_DATA_DIR, f"server{n}")
        replicaof = f"{host}:{first}" if n and first_start(data_dir) else ""  # later, the sentinels say
        lines = [f"logfile {data_dir}/server.log", *group_server_lines(password, replicaof)]
        parts.append(Part(f"redis {first + n}", server_command(first + n, data_dir, Config.REDIS_BIND, password,
                                                               extra=lines)))
    sentinels = [f"{host}:{Config.SENTINEL_PORT + n}" for n in range(3)]
    for n, sentinel in enumerate(sentinels):
        data_dir = os.path.join(Config.REDIS_DATA_DIR, f"sentinel{n}")
        command = sentinel_command(Config.SENTINEL_PORT + n, data_dir, f"{host}:{first}", password,
                                   Config.REDIS_SENTINEL_PASSWORD, Config.REDIS_BIND, logfile=f"{data_dir}/sentinel.log")
        parts.append(Part(f"sentinel {sentinel}", command))
    os.environ["REDIS_URL"] = group_url(password, sentinels)
    for _ in range(100):
        if answers(os.environ["REDIS_URL"]):
            say(f"\n  Redis: a Sentinel group, its logs in {Config.REDIS_DATA_DIR}/server*/ and sentinel*/. Other worker "
                f"hosts: REDIS_URL='{group_url('PASSWORD', sentinels)}' make worker\n"
                f"  (PASSWORD is in {Config.REDIS_DATA_DIR}/password)")
            return parts
        time.sleep(0.1)
    for part in parts:
        part.stop()
    raise SystemExit("the Sentinel group did not answer within 10 s; see its output above")


def advertised_address() -> str:
    """Give the address the sentinels tell clients for the servers: loopback, or REDIS_BIND's (one address, not a wildcard)."""
    bind = Config.REDIS_BIND.split()[0]
    if is_loopback(bind):
        return "127.0.0.1"
    if bind in ("0.0.0.0", "::") or len(Config.REDIS_BIND.split()) > 1:
        raise SystemExit("make run HA=1 beyond loopback: set REDIS_BIND to the one address of this host other hosts "
                         "reach it at (the sentinels give it to clients)")
    if refusal := open_without_a_password():
        raise SystemExit(refusal)
    return bind


def start_simulated_yahoo() -> Part:
    """Start the simulated Yahoo (60 calls a minute, bursts of 100, as Yahoo's users report) and send Yahoo's calls to it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "scripts.simulated_yahoo", "--port", str(port), "--rate", "60/minute",
               "--burst", "100", "--ban", "60"]
    os.environ.update(PRICE_SOURCE="yahoo", YAHOO_URL=f"http://127.0.0.1:{port}")  # for the parts started after
    return Part("simulated Yahoo", command)


def refuse_a_busy_port() -> None:
    """Exit, naming the port and the setting, if another program listens on HOST:PORT (the web app could not start)."""
    with socket.socket(socket.AF_INET6 if ":" in Config.HOST else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: a closed one's TIME_WAIT is no obstacle
        try:
            probe.bind((Config.HOST, Config.PORT))
        except OSError as exc:
            raise SystemExit(f"port {Config.PORT} on {Config.HOST} is in use ({exc.strerror}): another program listens "
                             f"there. Stop it, or set PORT to a free port (make run PORT=5001)") from None


def web_answers() -> bool:
    """Whether the web app accepts connections on HOST:PORT (on this machine's loopback when it listens on all)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(Config.HOST, Config.HOST)
    try:
        socket.create_connection((host, Config.PORT), timeout=0.5).close()
    except OSError:
        return False
    return True


def announce_once_it_answers(parts: list[Part], stopped: Callable[[], bool]) -> None:
    """Print the URL once the web app answers there (tending the parts meanwhile), or say that it did not."""
    deadline = time.monotonic() + WEB_START_TIMEOUT
    while not stopped() and not web_answers() and time.monotonic() < deadline:
        for part in parts:
            part.tend()
        time.sleep(0.1)
    if stopped():
        return
    if web_answers():
        say(f"\n  Stock trends is running at http://{Config.HOST}:{Config.PORT}/  (prices: "
            f"{Config.PRICE_SOURCE.split(':', 1)[0]}; Ctrl-C stops it)\n")
    else:
        say(f"\n  The web app did not answer on port {Config.PORT} within {WEB_START_TIMEOUT} s: see its log above\n")


def main() -> None:
    """Start Redis (if needed), the workers and the web app; tend them until Ctrl-C, SIGTERM or SIGHUP; stop them in order."""
    parser = argparse.ArgumentParser(description="The whole system on this machine.")
    parser.add_argument("--simulated-yahoo", action="store_true",
                        help="fetch through yfinance from a local simulated Yahoo (scripts/simulated_yahoo.py)")
    parser.add_argument("--ha", action="store_true", help="a Sentinel group (three servers, three sentinels) for Redis")
    arguments = parser.parse_args()
    simulated_yahoo = arguments.simulated_yahoo
    exit_on_bad_settings()
    refuse_a_busy_port()
    parts: list[Part] = []
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # under nohup, outlive the terminal as asked
        signal.signal(signal.SIGHUP, request_stop)  # its terminal closed: stop the parts too, rather than leave them running
    try:
        if arguments.ha:
            parts.extend(start_sentinel_group())
        else:
            redis = start_redis_unless_one_answers()
            parts.extend([redis] if redis else [])
        if simulated_yahoo:
            parts.append(start_simulated_yahoo())
        parts.append(Part("workers", commands()["worker"]))
        parts.append(Part("web app", commands()["web"]))
        announce_once_it_answers(parts, lambda: stopping)
        while not stopping:
            for part in parts:
                part.tend()
            time.sleep(0.2)
    finally:
        for part in reversed(parts):  # web, then workers, then Redis
            part.stop()


if __name__ == "__main__":
    main()

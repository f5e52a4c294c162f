"""`make run`: the whole system on one machine — Redis (unless one answers), workers, web app.

Ctrl-C stops the web app first, then the workers (after their current jobs), then Redis.
"""
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from config import Config  # noqa: E402
from scripts.redis_server import answers, is_loopback  # noqa: E402


def start(name: str, command: list[str]) -> tuple[str, subprocess.Popen]:
    # Own session: the terminal's Ctrl-C comes to this script, which stops children in order.
    return name, subprocess.Popen(command, cwd=ROOT, start_new_session=True)


def wait_for_redis(redis: subprocess.Popen) -> None:
    for _ in range(100):
        if answers(Config.REDIS_URL):
            return
        if redis.poll() is not None:
            raise SystemExit("the Redis server exited at start; see its output above")
        time.sleep(0.1)
    raise SystemExit("the Redis server did not answer within 10 s")


def stop(processes: list[tuple[str, subprocess.Popen]]) -> None:
    for name, process in reversed(processes):  # web, then workers, then Redis
        if process.poll() is None:
            print(f"stopping {name}…", flush=True)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=Config.JOB_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    processes = []
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if not answers(Config.REDIS_URL):
            host = urlsplit(Config.REDIS_URL).hostname or "127.0.0.1"
            if not is_loopback(host):
                raise SystemExit(f"no Redis answers at {host}; start it there, or point REDIS_URL at this machine")
            processes.append(start("redis", [sys.executable, "scripts/redis_server.py"]))
            wait_for_redis(processes[-1][1])
        processes.append(start("workers", [sys.executable, "worker.py"]))
        processes.append(start("web app", [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "webapp:create_app()"]))
        print(f"\n  Stock trends is running at http://{Config.HOST}:{Config.PORT}/  (Ctrl-C stops it)\n", flush=True)
        while not stopping:
            exited = [name for name, process in processes if process.poll() is not None]
            if exited:
                print(f"{', '.join(exited)} exited; stopping everything", flush=True)
                break
            time.sleep(0.5)
    finally:
        stop(processes)


if __name__ == "__main__":
    main()

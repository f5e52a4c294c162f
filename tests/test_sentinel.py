"""A Sentinel-managed Redis (redis+sentinel://): every process follows the primary through a failover, no restarts.

Real servers, as `make run HA=1` runs them: three Redis servers and three sentinels (the same binary, `--sentinel`).
"""
import os
import subprocess
import sys

import pytest
from redis import Redis
from rq import Worker

from config import Config
from scripts.redis_server import group_server_lines
from scripts.sentinel import group_url, sentinel_command
from tests.conftest import ROOT, RedisServer, WebServer, free_port, http_json, wait_until

PASSWORD = "sentinel-test-password"
SERVICE = Config.SENTINEL_SERVICE


class SentinelGroup:
    """A Sentinel group as `make run HA=1` starts one: three servers, three sentinels, the shipped settings, on loopback."""

    def __init__(self, root):
        self.servers: list[RedisServer] = []
        for n in range(3):
            replicaof = f"127.0.0.1:{self.servers[0].port}" if n else ""
            self.servers.append(RedisServer(str(root / f"server{n}"), f":{PASSWORD}", password=PASSWORD,
                                            extra=group_server_lines(PASSWORD, replicaof)))
            self.servers[-1].start()
        for replica in self.servers[1:]:
            wait_until(lambda replica=replica: Redis.from_url(replica.url).info("replication").get("master_link_status")
                       == "up", timeout=30, what="each replica to sync with the primary")
        self.sentinels: list[tuple[int, subprocess.Popen]] = []
        for n in range(3):
            port = free_port()
            command = sentinel_command(port, str(root / f"sentinel{n}"), f"127.0.0.1:{self.servers[0].port}", PASSWORD)
            self.sentinels.append((port, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
        self.url = group_url(PASSWORD, [f"127.0.0.1:{port}" for port, _ in self.sentinels])
        wait_until(lambda: all(self._sees_group(port) for port, _ in self.sentinels), timeout=30,
                   what="every sentinel to know the primary, its replicas and the other sentinels")

    @staticmethod
    def _sees_group(port: int) -> bool:
        try:
            sentinel = Redis(port=port)
            return len(sentinel.sentinel_slaves(SERVICE)) == 2 and len(sentinel.sentinel_sentinels(SERVICE)) == 2
        except Exception:
            return False

    def primary_port(self) -> int:
        for port, process in self.sentinels:
            if process.poll() is None:
                return int(Redis(port=port).sentinel_get_master_addr_by_name(SERVICE)[1])
        raise AssertionError("no sentinel is running")

    def stop(self) -> None:
        for _, process in self.sentinels:
            process.kill()
            process.wait()
        for server in self.servers:
            if server.process and server.process.poll() is None:
                server.stop()


@pytest.fixture
def group(tmp_path):
    group = SentinelGroup(tmp_path)
    yield group
    group.stop()


def test_every_process_follows_the_primary_through_a_failover_without_a_restart(group, start_workers, tmp_path):
    workers = start_workers(group.url, 2, PRICE_SOURCE="synthetic")
    web = WebServer(group.url, tmp_path / "web.log")
    try:
        before = http_json("POST", web.url + "/get_trends", {"symbols": ["AAPL", "MSFT"]})
        assert before["status"] == "success"
        primary = next(server for server in group.servers if server.port == group.primary_port())
        on_primary = Redis.from_url(primary.url)
        assert on_primary.keys("trends:limits*"), "the rate limiter counts on the primary, through the sentinels"
        names = workers.names()
        primary.process.kill()  # kill -9: no goodbye to the replica or the sentinels
        primary.process.wait()
        wait_until(lambda: group.primary_port() != primary.port, timeout=30, what="the sentinels to promote the replica")

        def answers_again() -> bool:
            try:
                return http_json("POST", web.url + "/get_trends", {"symbols": ["GOOG"]})["status"] == "success"
            except OSError:  # 503 while the web app's connections find the new primary
                return False

        wait_until(answers_again, timeout=30, what="a request answered in full by the new primary's fleet")
        assert web.process.poll() is None and workers.names() == names, "the same web app and workers, no restarts"
        health = http_json("GET", web.url + "/healthz")
        assert health["status"] == "ok"
    finally:
        web.stop()
    new_primary = Redis(port=group.primary_port(), password=PASSWORD)
    assert {w.name for w in Worker.all(connection=new_primary)} == names



@pytest.mark.parametrize("script, code, said", [
    ("scripts/redis_server.py", 78, "make redis runs one server, on REDIS_URL's port: REDIS_URL names a Sentinel group"),
    ("scripts/run.py", 1, "no primary answers for the Sentinel group REDIS_URL names"),
])
def test_make_redis_and_make_run_say_what_to_do_with_a_sentinel_url_that_answers_nothing(script, code, said, tmp_path):
    env = dict(os.environ, REDIS_URL=f"redis+sentinel://127.0.0.1:{free_port()}/{SERVICE}", REDIS_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code and said in done.stderr, (done.returncode, done.stderr[-500:])
    assert "Traceback" not in done.stderr

"""A Sentinel-managed Redis (redis+sentinel://): every process follows the primary through a failover, no restarts.

Real servers: the embedded valkey-server as a primary and a replica, and as three sentinels.
"""
import os
import subprocess
import sys

import pytest
from redis import Redis
from rq import Worker

from scripts.redis_server import server_binary
from tests.conftest import ROOT, RedisServer, WebServer, free_port, http_json, wait_until

PASSWORD = "sentinel-test-password"
SERVICE = "trends"


class SentinelGroup:
    """A primary, a replica and three sentinels watching them (quorum 2, down after 1 s), all on loopback."""

    def __init__(self, root):
        self.servers = [RedisServer(str(root / name), f":{PASSWORD}", password=PASSWORD) for name in ("a", "b")]
        self.sentinels: list[tuple[int, subprocess.Popen]] = []
        for server in self.servers:
            server.start()
            Redis.from_url(server.url).config_set("masterauth", PASSWORD)  # either may be the other's replica
        primary, replica = self.servers
        Redis.from_url(replica.url).replicaof("127.0.0.1", primary.port)
        wait_until(lambda: Redis.from_url(replica.url).info("replication").get("master_link_status") == "up",
                   timeout=30, what="the replica to sync with the primary")
        for n in range(3):
            port, folder = free_port(), root / f"sentinel{n}"
            folder.mkdir()
            conf = folder / "sentinel.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                            f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                            f"sentinel failover-timeout {SERVICE} 10000\n")
            process = subprocess.Popen([server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.STDOUT)
            self.sentinels.append((port, process))
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        self.url = f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"
        wait_until(lambda: all(self._sees_replica(port) for port, _ in self.sentinels), timeout=30,
                   what="every sentinel to know the primary and its replica")

    @staticmethod
    def _sees_replica(port: int) -> bool:
        try:
            return len(Redis(port=port).sentinel_slaves(SERVICE)) == 1
        except Exception:
            return False

    def primary_port(self) -> int:
        return int(Redis(port=self.sentinels[0][0]).sentinel_get_master_addr_by_name(SERVICE)[1])

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

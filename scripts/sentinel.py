"""Runs a Redis Sentinel (`make sentinel`), and the one-machine Sentinel group of `make run HA=1`.

A group is three Redis servers (a primary and two replicas, scripts/redis_server.py
`group_server_lines`) and three sentinels. When SENTINEL_QUORUM sentinels find the primary silent
for SENTINEL_DOWN_AFTER_MS, they promote a replica, and every process of the project follows it
(jobs/connection.py). The sentinels use the same server binary (`--sentinel`).
"""
import os

from config import Config, exit_on_bad_settings, is_loopback, refuse_to_start
from scripts.redis_server import server_binary

FAILOVER_TIMEOUT_MS = 10_000  # a failover that has not ended by then is tried again (by the sentinels)


def sentinel_command(port: int, data_dir: str, primary: str, password: str = "", sentinel_password: str = "",
                     bind: str = "127.0.0.1", service: str = Config.SENTINEL_SERVICE, quorum: int = Config.SENTINEL_QUORUM,
                     down_after_ms: int = Config.SENTINEL_DOWN_AFTER_MS, logfile: str = "") -> list[str]:
    """Write `data_dir/sentinel.conf` for a sentinel of `primary` (HOST:PORT) on `bind:port`; give the command that runs it.

    logfile: where it logs (else its standard output). The file is written once: a sentinel keeps in
    it what it learns (the current primary, the replicas, the other sentinels), so a sentinel started
    again knows the group as it is now.
    """
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "sentinel.conf")
    if not os.path.exists(path):
        host, primary_port = primary.rsplit(":", 1)
        lines = [f"port {port}", f"bind {bind}", f"dir {data_dir}", "sentinel resolve-hostnames yes",
                 f"sentinel monitor {service} {host} {primary_port} {quorum}",
                 f"sentinel down-after-milliseconds {service} {down_after_ms}",
                 f"sentinel failover-timeout {service} {max(FAILOVER_TIMEOUT_MS, 3 * down_after_ms)}",
                 f"sentinel parallel-syncs {service} 1"]
        lines += [f"sentinel auth-pass {service} {password}"] if password else []
        lines += [f"logfile {logfile}"] if logfile else []
        lines += [f"requirepass {sentinel_password}", f"sentinel sentinel-pass {sentinel_password}"] \
            if sentinel_password else []
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as conf:
            conf.write("\n".join(lines) + "\n")
    return [server_binary(), path, "--sentinel"]


def group_url(password: str, sentinels: list[str], service: str = Config.SENTINEL_SERVICE, db: int = 0) -> str:
    """Give the REDIS_URL of a Sentinel group: its sentinels (HOST:PORT each) and service."""
    credentials = f":{password}@" if password else ""
    return f"redis+sentinel://{credentials}{','.join(sentinels)}/{service}/{db}"


def open_without_a_password() -> str | None:
    """Say why sentinels may not start as configured: listening beyond loopback (REDIS_BIND) with no password of their own."""
    if all(map(is_loopback, Config.REDIS_BIND.split())) or Config.REDIS_SENTINEL_PASSWORD:
        return None
    return f"REDIS_BIND ({Config.REDIS_BIND}) is not loopback: set REDIS_SENTINEL_PASSWORD, the sentinels' own password"


def main() -> None:
    """Replace this process with a sentinel of SENTINEL_MONITOR on SENTINEL_PORT (`make sentinel`)."""
    exit_on_bad_settings()
    if refusal := open_without_a_password():
        refuse_to_start(refusal)
    command = sentinel_command(Config.SENTINEL_PORT, os.path.join(Config.REDIS_DATA_DIR, "sentinel"),
                               Config.SENTINEL_MONITOR, Config.REDIS_REQUIREPASS, Config.REDIS_SENTINEL_PASSWORD,
                               Config.REDIS_BIND)
    os.execv(command[0], command)

if __name__ == "__main__":
    main()

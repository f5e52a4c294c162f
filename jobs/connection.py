"""One way from REDIS_URL to a Redis client: a server's URL, or a Sentinel group's (redis+sentinel://).

`redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]` names the sentinels and
the service they watch; the client asks them for the current primary and asks again after a
failover (redis-py's Sentinel), so every process follows the primary without a restart. The form is
rq-dashboard's (the same parser, `redis_sentinel_url`, reads it for both). The password is the data
servers', taken as written (that parser does not percent-decode: a password for this URL holds no
'@', ',' or '%'); it names no user. The sentinels' own password, if they ask one, is REDIS_SENTINEL_PASSWORD.
"""
from typing import Any
from urllib.parse import urlsplit

import redis_sentinel_url
from redis import Redis
from redis._parsers.base import BaseParser
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.sentinel import SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"
REPLICA_WAIT_MS = 2000  # how long a write the client is promised waits for a replica's acknowledgement
# Published before a WAIT that must count every write so far (WAIT counts only the connection's own):
# a PUBLISH reaches the replicas like a write and is taken while Redis is full, which a write is not.
REPLICATION_MARK_CHANNEL = "trends:replication-mark"


class NoReplicasError(RedisConnectionError):
    """A primary refused a write: no replica acknowledges its writes (min-replicas-to-write), or it is cut off."""


class NotReplicatedError(RedisConnectionError):
    """No replica acknowledged a write in REPLICA_WAIT_MS: it may not survive a failover, so it is not promised."""


# redis-py turns the error codes it knows into exception classes and leaves NOREPLICAS a plain
# ResponseError. As a connection error it is what it is to the project, an outage to wait out (the
# workers) or answer 503 for (the web app), and redis-py drops the connection, so the next one asks
# the sentinels for the primary again. Reaches inside redis-py: pinned by tests/test_sentinel.py.
BaseParser.EXCEPTION_CLASSES["NOREPLICAS"] = NoReplicasError


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names a Sentinel group rather than one server."""
    return urlsplit(url).scheme == SENTINEL_SCHEME


def sentinel_service(url: str) -> tuple[str, int]:
    """Give the service name and db a redis+sentinel:// URL names; ValueError, in words, if it names none."""
    parsed = redis_sentinel_url.parse_sentinel_url(url)
    service = parsed.default_client.service if parsed.default_client else None
    if not service or not parsed.hosts:
        raise ValueError("a redis+sentinel:// URL names its sentinels and service: "
                         "redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]")
    return service, parsed.client_options["db"]


def limiter_storage(url: str, sentinel_password: str = "") -> tuple[str, dict[str, Any]]:
    """Give flask-limiter's storage URI and options for `url` (the `limits` library reads a Sentinel URL its own way).

    `limits` would take the URL's password for the sentinels, a /db for part of the service name,
    and read counts from replicas (stale, so over the limit): it gets the sentinels and service
    only, the password and db as the data servers' connection options, and the primary alone.
    """
    if not is_sentinel_url(url):
        return url, {}
    service, db = sentinel_service(url)
    parts = urlsplit(url)
    options: dict[str, Any] = {"db": db, "use_replicas": False, "password": parts.password or None,  # as written
                               "sentinel_kwargs": {"password": sentinel_password or None}}
    return f"{SENTINEL_SCHEME}://{parts.netloc.rpartition('@')[2]}/{service}", options


def connect(url: str, sentinel_password: str = "", **options: Any) -> Redis:
    """Connect to the server at `url`, or to the current primary of the Sentinel group it names.

    `options` go to every connection to the data servers (timeouts, health checks).
    """
    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    sentinel_options = {"password": sentinel_password or None, "socket_timeout": options.get("socket_timeout", 5),
                        "socket_connect_timeout": options.get("socket_connect_timeout", 2)}
    _, client = redis_sentinel_url.connect(url, sentinel_options=sentinel_options, client_options=options)
    return client


def replicated(pipe: Pipeline, replicas: int) -> list:
    """Send `pipe` (no MULTI) and wait until `replicas` replicas have its writes (WAIT, on the same connection).

    Gives the replies of the pipeline's own commands; NotReplicatedError if too few replicas acknowledged
    them in REPLICA_WAIT_MS. With `replicas` 0 (one server, no group) it only sends the pipeline.
    """
    if replicas:
        pipe.wait(replicas, REPLICA_WAIT_MS)
    replies = pipe.execute()
    if replicas and replies[-1] < replicas:
        raise NotReplicatedError(f"only {replies[-1]} of {replicas} replicas acknowledged the write in "
                                 f"{REPLICA_WAIT_MS} ms")
    return replies[:-1] if replicas else replies


def run_script(script: Script, keys: list, args: list, replicas: int) -> Any:
    """Run `script`; with `replicas`, also wait until that many replicas have its writes (`replicated`)."""
    if not replicas:
        return script(keys=keys, args=args)
    connection = script.registered_client
    pipe = connection.pipeline(transaction=False)  # not as a pipeline's script: redis-py would ask SCRIPT EXISTS first
    pipe.evalsha(script.sha, len(keys), *keys, *args)
    try:
        return replicated(pipe, replicas)[0]
    except NoScriptError:  # a new primary after a failover: its script cache starts empty
        pipe.eval(script.script, len(keys), *keys, *args)
        return replicated(pipe, replicas)[0]


def confirmed(pipe: Pipeline, replicas: int) -> list:
    """Send `pipe` (reads) and wait until `replicas` replicas have every write Redis took so far; give its replies.

    On the same connection as the reads, so what they read is on a replica of the server they read it
    from before anyone is told (NotReplicatedError if not in REPLICA_WAIT_MS). With `replicas` 0, only sends.
    """
    if not replicas:
        return pipe.execute()
    pipe.publish(REPLICATION_MARK_CHANNEL, 1)
    return replicated(pipe, replicas)[:-1]


def replicas_behind(connection: Redis) -> int:
    """How many replicas a client's promised writes wait for: one behind a Sentinel group's primary, none on one server."""
    return 1 if isinstance(connection.connection_pool, SentinelConnectionPool) else 0

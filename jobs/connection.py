"""One way from REDIS_URL to a Redis client: a server's URL, or a Sentinel group's (redis+sentinel://).

`redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]` names the sentinels and
the service they watch; the client asks them for the current primary and asks again after a
failover (redis-py's Sentinel), so every process follows the primary without a restart. The form is
rq-dashboard's (the same parser, `redis_sentinel_url`, reads it for both). The password is the data
servers'; the sentinels' own, if they ask one, is REDIS_SENTINEL_PASSWORD.
"""
from typing import Any
from urllib.parse import unquote, urlsplit

import redis_sentinel_url
from redis import Redis

SENTINEL_SCHEME = "redis+sentinel"


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
    options: dict[str, Any] = {"db": db, "use_replicas": False, "password": unquote(parts.password or "") or None,
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

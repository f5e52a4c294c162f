"""Every setting of the project, read once from environment variables and checked at start-up.

Each name below is documented in docs/operations.md's settings table; change a default there too.
Every process (web app, workers, `make run`, `make redis`) calls `check_settings` before it starts.
"""
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

from limits import parse as parse_rate_limit

from jobs.connection import SENTINEL_SCHEME, is_sentinel_url, sentinel_service

ROOT = os.path.dirname(os.path.abspath(__file__))
# One line per record in every process: web app, workers and `make run` write to the same journal.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")  # what Python's logging accepts by name
EGRESS_PATTERN = r"[A-Za-z0-9._-]{1,100}"  # an egress name goes into Redis keys and metric labels
RENAMED = {"MAX_BODY_BYTES": "MAX_CONTENT_LENGTH", "REDIS_PASSWORD": "REDIS_REQUIREPASS"}  # old name → new (0.7.0)
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


# The exit status of a process that refuses to start as configured (sysexits' EX_CONFIG): the systemd
# unit does not restart on it, since starting again would be refused again.
REFUSED = 78


def refuse_to_start(message: str) -> NoReturn:
    """Say why this process will not start, on stderr, and exit with REFUSED."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(REFUSED)


def refuse_login(exc: BaseException) -> NoReturn:
    """Exit with REFUSED, saying Redis refused this process's password and where the password comes from."""
    refuse_to_start(f"Redis refused the password ({exc}): REDIS_URL's password (redis://:PASSWORD@HOST:PORT/DB) is "
                    f"wrong or missing. The Redis that `make run` starts keeps its password in REDIS_DATA_DIR/password "
                    f"({Config.REDIS_DATA_DIR}/password): give other hosts that one. Fix the setting and start again.")


class SettingsError(ValueError):
    """Settings that cannot work, each named with what is wrong; processes refuse to start with them."""


def _str(name: str, default: str) -> str:
    """Read a text setting; empty means the default."""
    return os.environ.get(name) or default


def _parsed(name: str, default: object, parse: Callable[[str], Any], kind: str) -> Any:
    """Read a setting through `parse`, refusing by name anything it cannot parse."""
    raw = _str(name, str(default))
    try:
        return parse(raw)
    except ValueError:
        refuse_to_start(f"setting {name} must be {kind}, got {raw!r}")


def _int(name: str, default: int) -> int:
    """Read an integer setting."""
    return _parsed(name, default, int, "an integer")


def _float(name: str, default: float) -> float:
    """Read a number setting."""
    return _parsed(name, default, float, "a number")


def _bool(name: str, default: bool) -> bool:
    """Read a yes/no setting (1/0, true/false, yes/no, on/off), refusing anything else by name."""
    raw = _str(name, str(default)).lower()
    if raw not in _FLAGS:
        refuse_to_start(f"setting {name} must be one of {', '.join(_FLAGS)}, got {raw!r}")
    return _FLAGS[raw]


class Config:
    """The settings, as class attributes: Flask reads them with `from_object`, workers and scripts directly."""

    REDIS_URL = _str("REDIS_URL", "redis://127.0.0.1:6379/0")  # or redis+sentinel://... (jobs/connection.py)
    REDIS_SENTINEL_PASSWORD = _str("REDIS_SENTINEL_PASSWORD", "")  # the sentinels' own, if they ask one
    PRICE_SOURCE = _str("PRICE_SOURCE", "yahoo")  # yahoo, synthetic or csv:DIR
    HOST = _str("HOST", "127.0.0.1")  # the web app's address
    PORT = _int("PORT", 5000)
    WORKERS = _int("WORKERS", os.cpu_count() or 1)  # worker processes `make worker` starts on this host
    # Workers run this much nicer than the processes beside them: on a shared host the web app and Redis,
    # which every worker waits on, get the CPU first (docs/performance.md measures it).
    WORKER_NICE = _int("WORKER_NICE", 10)
    LOG_LEVEL = _str("LOG_LEVEL", "INFO").upper()
    # Workers take interactive jobs first; requests with more than BULK_THRESHOLD symbols go to bulk.
    INTERACTIVE_QUEUE = _str("INTERACTIVE_QUEUE", "trends")
    BULK_QUEUE = _str("BULK_QUEUE", "trends-bulk")
    BULK_THRESHOLD = _int("BULK_THRESHOLD", 20)
    MAX_SYMBOLS = _int("MAX_SYMBOLS", 100)  # per request, on both POST endpoints and the page
    # /get_trends waits this long: enough for a job whose worker died just before its timeout to be
    # found and run in full again (check_settings).
    TRENDS_TIMEOUT = _int("TRENDS_TIMEOUT", 45)
    JOB_TIMEOUT = _int("JOB_TIMEOUT", 15)
    RESULT_CACHE_TTL = _int("RESULT_CACHE_TTL", 300)  # a finished symbol is reused this long (same day, same options)
    PRICE_CACHE_TTL = _int("PRICE_CACHE_TTL", 3600)  # 0: no price cache
    RESULT_TTL = _int("RESULT_TTL", 600)  # results stay readable this long after an analysis's last answer
    JOB_RETRIES = _int("JOB_RETRIES", 2)  # runs after a worker is lost or an unexpected error
    # Every worker beats every WORKER_LOST_AFTER / 3 s, busy or idle; silent for WORKER_LOST_AFTER s, it is
    # lost, and the next maintenance (every MAINTENANCE_INTERVAL s, by any worker) puts its jobs back.
    WORKER_TTL = _int("WORKER_TTL", 30)
    WORKER_LOST_AFTER = _int("WORKER_LOST_AFTER", 6)
    MAINTENANCE_INTERVAL = _int("MAINTENANCE_INTERVAL", 5)
    # Per client address, counted in Redis for all web processes (Flask-Limiter syntax): symbols
    # submitted through both POST endpoints together, and polls.
    RATE_LIMIT_SYMBOLS = _str("RATE_LIMIT_SYMBOLS", "3000/minute")
    RATE_LIMIT_POLL = _str("RATE_LIMIT_POLL", "600/minute")
    # Past either bound, requests of more than BULK_THRESHOLD symbols get 503 + Retry-After.
    MAX_BACKLOG = _int("MAX_BACKLOG", 10_000)  # symbols waiting in the queues
    MAX_QUEUE_WAIT = _int("MAX_QUEUE_WAIT", 300)  # seconds the oldest waiting job has waited
    MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1_000_000)  # request body bytes; Flask answers 413 above
    DASHBOARD_USER = _str("DASHBOARD_USER", "admin")
    DASHBOARD_PASSWORD = _str("DASHBOARD_PASSWORD", "")  # empty: no dashboard at /rq
    DASHBOARD_READ_ONLY = _bool("DASHBOARD_READ_ONLY", False)
    DASHBOARD_LOGIN_LIMIT = _str("DASHBOARD_LOGIN_LIMIT", "10/minute")  # failed logins per address
    EXCHANGE_CALENDAR = _str("EXCHANGE_CALENDAR", "XNYS")  # exchange_calendars name, for forecast dates
    YAHOO_TIMEOUT = _int("YAHOO_TIMEOUT", 10)  # seconds per Yahoo request
    YAHOO_RETRIES = _int("YAHOO_RETRIES", 2)
    YAHOO_BACKOFF = _float("YAHOO_BACKOFF", 1.0)  # base seconds: the n-th retry waits up to YAHOO_BACKOFF * 2^(n-1)
    # Every worker behind one egress (by default this host; several hosts behind one NAT: one name) shares one
    # budget of Yahoo calls, kept in Redis (jobs/governor.py); defaults from what Yahoo's users report.
    YAHOO_EGRESS = _str("YAHOO_EGRESS", socket.gethostname())
    YAHOO_RATE = _str("YAHOO_RATE", "60/minute")  # sustained calls per egress
    YAHOO_BURST = _int("YAHOO_BURST", 60)  # calls at once after a quiet spell
    YAHOO_COOLDOWN = _int("YAHOO_COOLDOWN", 60)  # seconds an egress pauses after a 429
    YAHOO_GIVE_UP_AFTER = _int("YAHOO_GIVE_UP_AFTER", 600)  # a symbol held back by 429s this long fails (rate_limited)
    YAHOO_URL = _str("YAHOO_URL", "")  # a Yahoo-compatible server instead of Yahoo (the simulated one)
    YAHOO_SOURCE_ADDRESS = _str("YAHOO_SOURCE_ADDRESS", "")  # the local address Yahoo calls leave from
    # A worker whose PRICE_SOURCE differs from the live fleet's refuses to start, unless this is set.
    ALLOW_MIXED_SOURCES = _bool("ALLOW_MIXED_SOURCES", False)
    YFINANCE_CACHE_DIR = _str("YFINANCE_CACHE_DIR", os.path.join(ROOT, ".cache", "yfinance"))
    SYNTHETIC_LATENCY_MS = _int("SYNTHETIC_LATENCY_MS", 0)  # PRICE_SOURCE=synthetic: simulated fetch time
    WEB_PROCESSES = _int("WEB_PROCESSES", 2)
    WEB_CONNECTIONS = _int("WEB_CONNECTIONS", 1000)  # per web process: open client connections at most
    # The Redis server that `make run` / `make redis` start (scripts/redis_server.py).
    REDIS_DATA_DIR = _str("REDIS_DATA_DIR", os.path.join(ROOT, ".data", "redis"))
    REDIS_MAXMEMORY = _str("REDIS_MAXMEMORY", "1gb")
    REDIS_BIND = _str("REDIS_BIND", "127.0.0.1")  # anything but loopback requires REDIS_REQUIREPASS or REDIS_ACL_FILE
    # The password the server asks of clients (Redis's requirepass); by default the one in REDIS_URL.
    REDIS_REQUIREPASS = _str("REDIS_REQUIREPASS", unquote(urlsplit(REDIS_URL).password or ""))
    REDIS_ACL_FILE = _str("REDIS_ACL_FILE", "")
    REDIS_TLS_CERT = _str("REDIS_TLS_CERT", "")  # all three, or none: the port then speaks TLS only
    REDIS_TLS_KEY = _str("REDIS_TLS_KEY", "")
    REDIS_TLS_CA = _str("REDIS_TLS_CA", "")
    # A Sentinel group (scripts/sentinel.py; docs/operations.md "Redis Sentinel"). `make redis` with
    # REDIS_REPLICAOF=HOST:PORT runs a replica of it; with REDIS_HA=1 (or as a replica) a server of a group.
    REDIS_HA = _bool("REDIS_HA", False)
    REDIS_REPLICAOF = _str("REDIS_REPLICAOF", "")
    SENTINEL_MONITOR = _str("SENTINEL_MONITOR", "127.0.0.1:6379")  # `make sentinel`: the group's first primary
    SENTINEL_PORT = _int("SENTINEL_PORT", 26379)
    SENTINEL_SERVICE = _str("SENTINEL_SERVICE", "trends")
    SENTINEL_DOWN_AFTER_MS = _int("SENTINEL_DOWN_AFTER_MS", 5000)  # silent this long, a primary is replaced
    SENTINEL_QUORUM = _int("SENTINEL_QUORUM", 2)  # sentinels that must agree it is down (of three)


# A worker asked to stop finishes its job; one still running this long after is told again (worker.py).
WORKER_STOP_PATIENCE = Config.JOB_TIMEOUT + Config.WORKER_LOST_AFTER


def settings_of(config: object = Config) -> dict[str, Any]:
    """Collect the UPPER_CASE settings of a config object into the mapping `check_settings` takes."""
    return {name: getattr(config, name) for name in dir(config) if name.isupper()}


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse settings that cannot work, alone or together, naming each and saying why (SettingsError)."""
    problems = [f"{old} was renamed {new}: set {new} instead" for old, new in RENAMED.items() if os.environ.get(old)]
    problems += [*_out_of_range(settings), *_malformed(settings)]
    if not problems:
        problems += _incoherent(settings)
    if problems:
        raise SettingsError("settings that cannot work: " + "; ".join(problems))


def exit_on_bad_settings() -> None:
    """Check this process's settings before it starts anything; exit with the problems named."""
    try:
        check_settings(settings_of(Config))
    except SettingsError as exc:
        refuse_to_start(str(exc))


# Workable bounds of each number. A busy worker beats every WORKER_LOST_AFTER / 3 s, at most once a second.
_RANGES: dict[str, tuple[float, float]] = {
    "PORT": (1, 65535), "WORKERS": (1, 1024), "WORKER_NICE": (0, 19), "BULK_THRESHOLD": (1, 10_000), "MAX_SYMBOLS": (1, 10_000),
    "TRENDS_TIMEOUT": (1, 3600), "JOB_TIMEOUT": (1, 3600), "RESULT_CACHE_TTL": (1, 86_400),
    "PRICE_CACHE_TTL": (0, 86_400), "RESULT_TTL": (2, 7 * 86_400), "JOB_RETRIES": (0, 10), "WORKER_TTL": (10, 3600),
    "SENTINEL_PORT": (1, 65535), "SENTINEL_DOWN_AFTER_MS": (2000, 600_000), "SENTINEL_QUORUM": (1, 100),
    "WORKER_LOST_AFTER": (3, 3600), "MAINTENANCE_INTERVAL": (1, 3600), "MAX_BACKLOG": (1, 10_000_000),
    "MAX_QUEUE_WAIT": (1, 86_400), "MAX_CONTENT_LENGTH": (1024, 100_000_000), "YAHOO_TIMEOUT": (1, 300),
    "YAHOO_RETRIES": (0, 10), "YAHOO_BACKOFF": (0, 60), "SYNTHETIC_LATENCY_MS": (0, 60_000),
    "YAHOO_BURST": (1, 100_000), "YAHOO_COOLDOWN": (1, 3600),
    "YAHOO_GIVE_UP_AFTER": (10, 86_400), "WEB_PROCESSES": (1, 256), "WEB_CONNECTIONS": (1, 100_000),
}


def _out_of_range(settings: Mapping[str, Any]) -> list[str]:
    """Each number outside its workable bounds."""
    return [f"{name} must be between {least:g} and {most:g}, got {settings[name]}"
            for name, (least, most) in _RANGES.items() if not least <= settings[name] <= most]


def _malformed_redis_url(url: str) -> list[str]:
    """Say what is wrong with REDIS_URL, if anything."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix", SENTINEL_SCHEME):
        return ["REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel://"]
    if not is_sentinel_url(url):
        return []
    try:
        sentinel_service(url)
    except ValueError as exc:
        return [f"REDIS_URL: {exc}"]
    if any(mark in (urlsplit(url).password or "") for mark in "@,%"):
        return ["REDIS_URL: a redis+sentinel:// password is read as written: it may not hold '@', ',' or '%'"]
    return []


def _malformed(settings: Mapping[str, Any]) -> list[str]:
    """Each text setting that does not have its expected form."""
    problems = []
    problems += _malformed_redis_url(settings["REDIS_URL"])
    source = settings["PRICE_SOURCE"]
    if not re.fullmatch(r"yahoo|synthetic|csv:.+", source):
        problems.append(f"PRICE_SOURCE must be yahoo, synthetic or csv:DIR, got {source!r}")
    elif source.startswith("csv:") and not os.path.isdir(source[len("csv:"):]):
        problems.append(f"PRICE_SOURCE names a folder that does not exist: {source[len('csv:'):]!r}")
    if settings["LOG_LEVEL"] not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {settings['LOG_LEVEL']!r}")
    if not re.fullmatch(r"\d+([kmg]b?|b)?", settings["REDIS_MAXMEMORY"].lower()):
        problems.append(f"REDIS_MAXMEMORY must be a size such as 512mb or 1gb, got {settings['REDIS_MAXMEMORY']!r}")
    problems += [f"{name} must be HOST:PORT, got {settings[name]!r}" for name in ("REDIS_REPLICAOF", "SENTINEL_MONITOR")
                 if settings[name] and not re.fullmatch(r"[^\s:]+:\d{1,5}", settings[name])]
    problems += _malformed_yahoo(settings) + _positive_rate(settings)
    for name in ("RATE_LIMIT_SYMBOLS", "RATE_LIMIT_POLL", "DASHBOARD_LOGIN_LIMIT", "YAHOO_RATE"):
        try:
            parse_rate_limit(settings[name])
        except ValueError:
            problems.append(f"{name} must be a rate such as 600/minute, got {settings[name]!r}")
    return problems


def _malformed_yahoo(settings: Mapping[str, Any]) -> list[str]:
    """Each Yahoo setting that does not have its expected form."""
    problems = []
    if not re.fullmatch(EGRESS_PATTERN, settings["YAHOO_EGRESS"]):
        problems.append(f"YAHOO_EGRESS must be 1-100 letters, digits, '.', '_' or '-', got {settings['YAHOO_EGRESS']!r}")
    if settings["YAHOO_URL"] and urlsplit(settings["YAHOO_URL"]).scheme not in ("http", "https"):
        problems.append(f"YAHOO_URL must start with http:// or https://, got {settings['YAHOO_URL']!r}")
    if settings["YAHOO_SOURCE_ADDRESS"]:
        try:
            ipaddress.ip_address(settings["YAHOO_SOURCE_ADDRESS"])
        except ValueError:
            problems.append(f"YAHOO_SOURCE_ADDRESS must be an IP address of this host, got "
                            f"{settings['YAHOO_SOURCE_ADDRESS']!r}")
    return problems


def _positive_rate(settings: Mapping[str, Any]) -> list[str]:
    """YAHOO_RATE refused if it allows no call at all."""
    try:
        return [] if yahoo_rate_per_second(settings["YAHOO_RATE"]) > 0 else [
            f"YAHOO_RATE must allow at least one call, got {settings['YAHOO_RATE']!r}"]
    except ValueError:
        return []  # refused as malformed already


def yahoo_rate_per_second(rate: str) -> float:
    """Turn a YAHOO_RATE such as 60/minute into calls per second."""
    item = parse_rate_limit(rate)
    return item.amount / item.get_expiry()


def _incoherent(settings: Mapping[str, Any]) -> list[str]:
    """Each rule that settings break together."""
    problems = []
    recovery = 2 * settings["JOB_TIMEOUT"] + settings["WORKER_LOST_AFTER"] + settings["MAINTENANCE_INTERVAL"]
    if settings["TRENDS_TIMEOUT"] < recovery:
        problems.append(
            f"TRENDS_TIMEOUT ({settings['TRENDS_TIMEOUT']}) must be at least 2 × JOB_TIMEOUT + WORKER_LOST_AFTER + "
            f"MAINTENANCE_INTERVAL ({recovery}): a job whose worker dies just before its timeout is found and run "
            "in full again in that time")
    if settings["RESULT_CACHE_TTL"] >= settings["RESULT_TTL"]:
        problems.append(f"RESULT_CACHE_TTL ({settings['RESULT_CACHE_TTL']}) must be less than RESULT_TTL "
                        f"({settings['RESULT_TTL']}): a reused result must outlive the request that reuses it")
    if settings["INTERACTIVE_QUEUE"] == settings["BULK_QUEUE"]:
        problems.append("INTERACTIVE_QUEUE and BULK_QUEUE must differ: interactive jobs are taken first")
    tls = [settings[name] for name in ("REDIS_TLS_CERT", "REDIS_TLS_KEY", "REDIS_TLS_CA")]
    if any(tls) and not all(tls):
        problems.append("REDIS_TLS_CERT, REDIS_TLS_KEY and REDIS_TLS_CA go together: set all three or none")
    asks_password = settings["REDIS_REQUIREPASS"] or settings["REDIS_ACL_FILE"]
    if not all(map(is_loopback, settings["REDIS_BIND"].split())) and not asks_password:
        problems.append(f"REDIS_BIND ({settings['REDIS_BIND']}) is not loopback: set REDIS_REQUIREPASS (or REDIS_ACL_FILE) "
                        "so the server asks clients for one")
    return problems


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, as in a URL or a Redis `bind` line) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.lstrip("-")).is_loopback  # Redis marks optional addresses with "-"
    except ValueError:
        return False

"""Every setting of the project, read once from environment variables.

Each name below is documented in the README's settings table; change a default there too.
"""
import os
from collections.abc import Mapping
from typing import Any


def _int(name: str, default: int) -> int:
    """Read an integer setting, failing at start-up with the setting's name if it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"setting {name} must be an integer, got {raw!r}") from None


class Config:
    REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    PRICE_SOURCE = os.environ.get("PRICE_SOURCE") or "yahoo"
    HOST = os.environ.get("HOST") or "127.0.0.1"
    PORT = _int("PORT", 5000)
    WORKERS = _int("WORKERS", os.cpu_count() or 1)
    LOG_LEVEL = os.environ.get("LOG_LEVEL") or "INFO"
    # Workers take interactive jobs first; requests with more than BULK_THRESHOLD symbols go to bulk.
    INTERACTIVE_QUEUE = os.environ.get("INTERACTIVE_QUEUE") or "trends"
    BULK_QUEUE = os.environ.get("BULK_QUEUE") or "trends-bulk"
    BULK_THRESHOLD = _int("BULK_THRESHOLD", 20)
    MAX_SYMBOLS = _int("MAX_SYMBOLS", 100)
    # /get_trends waits this long: enough for a job whose worker died just before its timeout to be
    # found and run in full again (check_settings).
    TRENDS_TIMEOUT = _int("TRENDS_TIMEOUT", 45)
    JOB_TIMEOUT = _int("JOB_TIMEOUT", 15)
    RESULT_CACHE_TTL = _int("RESULT_CACHE_TTL", 300)
    PRICE_CACHE_TTL = _int("PRICE_CACHE_TTL", 3600)  # 0: no price cache
    RESULT_TTL = _int("RESULT_TTL", 600)
    JOB_RETRIES = _int("JOB_RETRIES", 2)
    # Every worker beats every WORKER_LOST_AFTER / 3 s, busy or idle; silent for WORKER_LOST_AFTER s, it is
    # lost, and the next maintenance (every MAINTENANCE_INTERVAL s, by any worker) puts its jobs back.
    WORKER_TTL = _int("WORKER_TTL", 30)
    WORKER_LOST_AFTER = _int("WORKER_LOST_AFTER", 6)
    MAINTENANCE_INTERVAL = _int("MAINTENANCE_INTERVAL", 5)
    # Per client address, counted in Redis for all web processes (Flask-Limiter syntax): symbols
    # submitted through both POST endpoints together, and polls.
    RATE_LIMIT_SYMBOLS = os.environ.get("RATE_LIMIT_SYMBOLS") or "3000/minute"
    RATE_LIMIT_POLL = os.environ.get("RATE_LIMIT_POLL") or "600/minute"
    # Past either bound, requests of more than BULK_THRESHOLD symbols get 503 + Retry-After.
    MAX_BACKLOG = _int("MAX_BACKLOG", 10_000)  # symbols waiting in the queues
    MAX_QUEUE_WAIT = _int("MAX_QUEUE_WAIT", 300)  # seconds the oldest waiting job has waited
    DASHBOARD_USER = os.environ.get("DASHBOARD_USER") or "admin"
    DASHBOARD_PASSWORD = os.environ.get("DASHBOARD_PASSWORD") or ""
    DASHBOARD_READ_ONLY = (os.environ.get("DASHBOARD_READ_ONLY") or "").lower() in ("1", "true", "yes")
    DASHBOARD_LOGIN_LIMIT = os.environ.get("DASHBOARD_LOGIN_LIMIT") or "10/minute"  # failed logins per address
    EXCHANGE_CALENDAR = os.environ.get("EXCHANGE_CALENDAR") or "XNYS"  # exchange_calendars name, for forecast dates
    YAHOO_TIMEOUT = _int("YAHOO_TIMEOUT", 10)
    YAHOO_RETRIES = _int("YAHOO_RETRIES", 2)
    YAHOO_BACKOFF = float(os.environ.get("YAHOO_BACKOFF") or 1.0)
    YFINANCE_CACHE_DIR = os.environ.get("YFINANCE_CACHE_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), ".cache", "yfinance"
    )
    REDIS_DATA_DIR = os.environ.get("REDIS_DATA_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), ".data", "redis"
    )
    REDIS_MAXMEMORY = os.environ.get("REDIS_MAXMEMORY") or "1gb"  # for the Redis make run / make redis start
    WEB_PROCESSES = _int("WEB_PROCESSES", 2)
    WEB_CONNECTIONS = _int("WEB_CONNECTIONS", 1000)  # per web process: open client connections at most
    SYNTHETIC_LATENCY_MS = _int("SYNTHETIC_LATENCY_MS", 0)
    MAX_CONTENT_LENGTH = _int("MAX_BODY_BYTES", 1_000_000)  # Flask answers 413 above this


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse settings that cannot work together, naming each and saying why (ValueError)."""
    problems = [f"{name} must be at least {least}, got {settings[name]}" for name, least in _LEAST.items()
                if settings[name] < least]
    recovery = 2 * settings["JOB_TIMEOUT"] + settings["WORKER_LOST_AFTER"] + settings["MAINTENANCE_INTERVAL"]
    if not problems and settings["TRENDS_TIMEOUT"] < recovery:
        problems.append(
            f"TRENDS_TIMEOUT ({settings['TRENDS_TIMEOUT']}) must be at least 2 × JOB_TIMEOUT + WORKER_LOST_AFTER + "
            f"MAINTENANCE_INTERVAL ({recovery}): a job whose worker dies just before its timeout is found and run "
            "in full again in that time")
    if settings["RESULT_CACHE_TTL"] >= settings["RESULT_TTL"]:
        problems.append(f"RESULT_CACHE_TTL ({settings['RESULT_CACHE_TTL']}) must be less than RESULT_TTL "
                        f"({settings['RESULT_TTL']}): a reused result must outlive the request that reuses it")
    if problems:
        raise ValueError("settings that cannot work together: " + "; ".join(problems))


# Smallest workable values: a busy worker beats every WORKER_LOST_AFTER / 3 s, at most once a second.
_LEAST = {"TRENDS_TIMEOUT": 1, "JOB_TIMEOUT": 1, "WORKER_LOST_AFTER": 3, "MAINTENANCE_INTERVAL": 1,
          "RESULT_TTL": 2, "RESULT_CACHE_TTL": 1}

"""Redis memory headroom: new work is refused before Redis is full, so what was accepted can still be answered.

Redis runs with `maxmemory` and `noeviction` (make redis): full, it refuses every write, the keeper's
and the workers' outcomes included. Admission (webapp/security.py `admit`) asks this first.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import NoPermissionError

ADMIT_UP_TO = 0.8  # the share of maxmemory in use past which new work is refused
# Measured 2026-12-06 (1,000 symbols of 20-symbol analyses, default parameters, MEMORY USAGE and INFO):
QUEUED_JOB_BYTES = 2_700  # a queued job: its hash, its queue entry, its work pointer
FINISHED_SYMBOL_BYTES = 18_000  # a finished symbol: the job, its result (a year of dates and numbers), the price cache
READ_EVERY = 0.5  # seconds a web process trusts its last reading of Redis's memory
PROMISED_KEY = "trends:memory:promised:"  # + a second: bytes every web process admitted in it (kept PROMISES_KEPT s)
PROMISES_KEPT = 3  # seconds: longer than a reading is trusted plus the claim that turns a promise into queued jobs


class MemoryGauge:
    """Redis's memory as admission sees it: a reading at most READ_EVERY s old, plus what every web process admitted since.

    What waits in the queues counts at what it will hold once answered, not what it holds now, so
    everything accepted can be answered without Redis filling up. Admissions are promised in Redis, per
    second, by every web process alike (one round trip a request): two processes cannot both spend the
    same headroom. A promise counts for its second and the next, so work admitted just before a reading
    may count twice for a second: on the safe side.
    """

    def __init__(self, redis: Redis, configured_max: int, waiting_jobs: Callable[[], int]) -> None:
        self._redis = redis
        self._configured_max = configured_max  # REDIS_MAXMEMORY, for a Redis whose INFO an ACL user may not read
        self._waiting_jobs = waiting_jobs
        self._lock = threading.Lock()
        self._read_at = -READ_EVERY
        self._used = self._max = 0

    def refusal(self, symbols: int) -> str | None:
        """Say why `symbols` new symbols would take Redis past ADMIT_UP_TO of its memory, or None (and promise them)."""
        with self._lock:
            if time.monotonic() - self._read_at >= READ_EVERY:
                used, self._max = _memory(self._redis, self._configured_max)
                self._used = used + self._waiting_jobs() * (FINISHED_SYMBOL_BYTES - QUEUED_JOB_BYTES)
                self._read_at = time.monotonic()
            used, limit = self._used, self._max
        if not limit:
            return None
        needed, second = symbols * FINISHED_SYMBOL_BYTES, int(time.time())
        pipe = self._redis.pipeline(transaction=False)
        pipe.incrby(f"{PROMISED_KEY}{second}", needed)
        pipe.expire(f"{PROMISED_KEY}{second}", PROMISES_KEPT)
        pipe.get(f"{PROMISED_KEY}{second - 1}")
        promised, _, before = pipe.execute()
        projected = used + promised + int(before or 0)
        if projected <= ADMIT_UP_TO * limit:
            return None
        self._redis.decrby(f"{PROMISED_KEY}{second}", needed)  # not admitted: its promise is given back
        return (f"the job store is nearly full ({projected / 2**20:.0f} of {limit / 2**20:.0f} MiB in use or "
                "promised to waiting symbols); new work is refused until answered results expire")


def _memory(redis: Redis, configured_max: int) -> tuple[int, int]:
    """Give Redis's memory in use and its maxmemory (0: unbounded), from INFO, or MEMORY STATS where INFO is denied."""
    try:
        info = redis.info("memory")
        return int(info["used_memory"]), int(info["maxmemory"])
    except NoPermissionError:  # an ACL user without @dangerous: INFO is refused, MEMORY STATS is not
        return int(redis.memory_stats()["total.allocated"]), configured_max


def parse_size(size: str) -> int:
    """Bytes in a Redis size setting ('1gb', '512mb', '100k', '1024'), as Redis reads it (k = 1000, kb = 1024)."""
    size = size.strip().lower()
    units = {"kb": 2**10, "mb": 2**20, "gb": 2**30, "k": 10**3, "m": 10**6, "g": 10**9, "b": 1}
    for unit, factor in units.items():
        if size.endswith(unit):
            return int(size[: -len(unit)]) * factor
    return int(size)

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

from jobs.records import promised_key

ADMIT_UP_TO = 0.8  # the share of maxmemory in use past which new work is refused
# Measured 2026-12-06 (1,000 symbols of 20-symbol analyses, default parameters, MEMORY USAGE and INFO):
QUEUED_JOB_BYTES = 2_700  # a queued job: its hash, its queue entry, its work pointer
FINISHED_SYMBOL_BYTES = 18_000  # a finished symbol: the job, its result (a year of dates and numbers), the price cache
READ_EVERY = 0.5  # seconds a web process trusts its last reading of Redis's memory
PROMISES_KEPT = 3  # seconds a second's promises are kept: they count for their second and the next (2 s)
LEASE_BYTES = 2**20  # promised at once by a web process, then admitted from without a round trip within its second


class MemoryGauge:
    """Redis's memory as admission sees it: a reading at most READ_EVERY s old, plus what every web process admitted since.

    What waits in the queues counts at what it will hold once answered, not what it holds now, so
    everything accepted can be answered without Redis filling up. Every web process promises in Redis,
    per second, what it may admit, a lease of LEASE_BYTES at a time (one round trip per ~58 symbols,
    not per request), and admits from its lease only within that second: two processes cannot both
    spend the same headroom. A promise counts for its second and the next, by when the jobs it admitted
    are queued and in every process's next reading; work may count twice for that second, and a lease
    not spent counts too: on the safe side.
    """

    def __init__(self, redis: Redis, configured_max: int, waiting_jobs: Callable[[], int]) -> None:
        self._redis = redis
        self._configured_max = configured_max  # REDIS_MAXMEMORY, for a Redis whose INFO an ACL user may not read
        self._waiting_jobs = waiting_jobs
        self._lock = threading.Lock()
        self._read_at = -READ_EVERY
        self._used = self._max = 0
        self._lease = (0, 0)  # (second, bytes left) of this process's promise

    def refusal(self, symbols: int) -> str | None:
        """Say why `symbols` new symbols would take Redis past ADMIT_UP_TO of its memory, or None (and promise them)."""
        needed, second = symbols * FINISHED_SYMBOL_BYTES, int(time.time())
        with self._lock:
            if time.monotonic() - self._read_at >= READ_EVERY:
                used, self._max = _memory(self._redis, self._configured_max)
                self._used = used + self._waiting_jobs() * (FINISHED_SYMBOL_BYTES - QUEUED_JOB_BYTES)
                self._read_at = time.monotonic()
            used, limit = self._used, self._max
            if not limit:
                return None
            lease_second, left = self._lease
            if lease_second == second and needed <= left:
                self._lease = (second, left - needed)
                return None
        projected = 0
        for lease in dict.fromkeys((max(needed, LEASE_BYTES), needed)):  # near the limit, only what is needed
            projected = used + self._promise(second, lease)
            if projected <= ADMIT_UP_TO * limit:
                with self._lock:
                    self._lease = (second, lease - needed)
                return None
            self._redis.decrby(promised_key(second), lease)  # not admitted: the promise is given back
        return (f"the job store is nearly full ({projected / 2**20:.0f} of {limit / 2**20:.0f} MiB in use or "
                "promised to waiting symbols); new work is refused until answered results expire")

    def release(self, symbols: int) -> None:
        """Give back what `refusal` just reserved for a request refused after all (its budget spent).

        Back into this second's lease: a client past its budget cannot hold the headroom others need.
        """
        with self._lock:
            second, left = self._lease
            if second == int(time.time()):
                self._lease = (second, left + symbols * FINISHED_SYMBOL_BYTES)

    def _promise(self, second: int, amount: int) -> int:
        """Promise `amount` bytes in `second`; give all that is promised in it and the second before."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.incrby(promised_key(second), amount)
        pipe.expire(promised_key(second), PROMISES_KEPT)
        pipe.get(promised_key(second - 1))
        promised, _, before = pipe.execute()
        return promised + int(before or 0)


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

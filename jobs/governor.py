"""One budget of calls to Yahoo per egress, shared in Redis by every worker on every host behind it.

Yahoo publishes no limit. What its users report (yfinance issues #2128, #836, #960, #2614) is
about one `history()` call per second per IP address sustained, and HTTP 429 after a burst of a
few hundred. So every call to Yahoo first takes a slot from its egress's budget (YAHOO_RATE,
bursts of YAHOO_BURST), whichever worker on whichever host makes it; YAHOO_EGRESS names the egress
(by default the host; hosts behind one NAT share one name).

The budget is the generic cell rate algorithm: one number per egress in Redis, the time the next
call may go (the theoretical arrival time, TAT), read and advanced by a script on Redis's own
clock. A take reserves the next slot and says how long to wait for it, so waiting workers are
spaced exactly, without polling. A fetch waits for its first call's slot at most the time its job
allows; a bulk job at most `bulk_horizon`, so an interactive symbol waits at most that long behind
bulk ones. A fetch that would wait longer is put back in its queue (PutBack) instead: it is never
lost and never holds a worker past its timeout. yfinance's own further calls (its cookie and
crumb, its second try after an error) each take a slot too, waiting within the same time; one
that cannot have one is answered here with a 429, never sent.

A 429 from Yahoo (on any call) starts a cool-down of the whole egress (YAHOO_COOLDOWN): no slot
is given until it ends, and after it the budget restarts empty, so calls resume at the steady
rate, not with a burst. A cool-down key set by hand without an expiry pauses the egress until it
is deleted.
"""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job

from jobs.records import REDIS_UNAVAILABLE, YAHOO_STATS_KEY

log = logging.getLogger(__name__)

PAUSED_RECHECK = 5.0  # seconds before asking again while a cool-down key without expiry pauses the egress
# KEYS: the egress's TAT, its cool-down flag, the stats hash. ARGV: interval ms, burst tolerance ms,
# the longest wait ms the caller accepts, the egress, 'wait' (counted as a wait) or 'call', and the
# furthest ahead a TAT can lawfully be (ms): one beyond it (a clock stepped back, a planted value)
# or not a number counts as now. Returns {1, wait ms} with a slot reserved, or {0, ms until asking
# again makes sense} without one.
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local cooling = redis.call('PTTL', KEYS[2])
if cooling > 0 then return {0, cooling} end
if cooling == -1 then return {0, -1} end
local interval, tolerance, longest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat ~= tat or tat < now or tat > now + tonumber(ARGV[6]) then tat = now end
local wait = math.max(tat - tolerance - now, 0)
if wait > longest then return {0, wait - longest} end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
if wait > 0 and ARGV[5] == 'wait' then
  redis.call('HINCRBY', KEYS[3], ARGV[4] .. ':waits', 1)
  redis.call('HINCRBYFLOAT', KEYS[3], ARGV[4] .. ':wait_seconds', wait / 1000)
end
return {1, wait}
"""
# KEYS as above. ARGV: cool-down ms, burst tolerance ms, the egress. The first 429 of a burst of them
# starts the cool-down and empties the budget from its end; the others find it started. Returns 1 if started.
COOL_DOWN_SCRIPT = """
if not redis.call('SET', KEYS[2], 1, 'PX', ARGV[1], 'NX') then return 0 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local restart = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
redis.call('SET', KEYS[1], restart, 'PX', restart - now + 1000)
redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':cooldowns', 1)
return 1
"""


class PutBack(Exception):  # noqa: N818 (not an error: the job goes back to its queue)
    """The egress has no Yahoo call for this job within the time it may wait: put the job back, try again later.

    `cooling`: because Yahoo answered 429 (a cool-down), not because the budget is booked.
    """

    def __init__(self, retry_after: float, reason: str, cooling: bool) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.cooling = cooling


@dataclass
class Governor:
    """An egress's share of Yahoo: `rate` calls a second, bursts of `burst`, `cooldown` seconds after a 429.

    `longest_job` (the job timeout, s) bounds how far ahead slots can lawfully be reserved.
    """

    connection: Redis
    egress: str
    rate: float
    burst: int
    cooldown: float
    bulk_queue: str
    longest_job: float

    def __post_init__(self) -> None:
        self._take = self.connection.register_script(TAKE_SCRIPT)
        self._cool_down = self.connection.register_script(COOL_DOWN_SCRIPT)
        self._keys = [f"trends:yahoo:tat:{self.egress}", f"trends:yahoo:cooldown:{self.egress}", YAHOO_STATS_KEY]
        self.interval_ms = 1000 / self.rate
        self.tolerance_ms = (self.burst - 1) * self.interval_ms
        self._furthest_ms = (self.cooldown + self.longest_job + 1) * 1000 + self.tolerance_ms
        # A bulk job reserves at most this far ahead: two slots, or a second when slots come faster.
        self.bulk_horizon = max(2 * self.interval_ms / 1000, 1.0)
        self._fetch = threading.local()  # this thread's fetch: whether its next call is paid for, and by when calls go

    def acquire(self, longest_wait: float, interactive: bool) -> None:
        """Take the slot of a fetch's first call, waiting up to `longest_wait` s (less for bulk jobs), or raise PutBack.

        yfinance's further calls in this fetch wait for their slots up to the same time (`admit`).
        """
        self._fetch.until = time.monotonic() + max(longest_wait, 0)
        if not interactive:
            longest_wait = min(longest_wait, self.bulk_horizon)
        with self._put_back_while_unavailable():
            reserved, wait_ms = self._reserve(longest_wait, "wait")
            if not reserved:
                self._defer(wait_ms)
            self._sleep_to_slot(wait_ms, defer=True)
        self._fetch.paid = True

    def calls_may_wait(self, seconds: float) -> None:
        """Let this thread's calls outside a fetch (yfinance's login at start-up) wait up to `seconds` for their slots."""
        self._fetch.until = time.monotonic() + seconds

    def admit(self) -> bool:
        """Let one call go now, after waiting for its slot if it has none yet; False: answer it here with a 429.

        Called by the HTTP transport for every call yfinance makes.
        """
        if getattr(self._fetch, "paid", False):
            self._fetch.paid = False
            return True
        with self._put_back_while_unavailable():
            reserved, wait_ms = self._reserve(getattr(self._fetch, "until", 0) - time.monotonic(), "call")
            return bool(reserved) and self._sleep_to_slot(wait_ms, defer=False)

    @contextlib.contextmanager
    def _put_back_while_unavailable(self) -> Iterator[None]:
        """Turn Redis unreachable or full into PutBack: no call goes without the fleet's budget, and the job keeps its retries."""
        try:
            yield
        except REDIS_UNAVAILABLE as exc:
            log.warning("egress %s: the fleet's Yahoo budget could not be read (%s); a job goes back to its queue",
                        self.egress, exc)
            # The reason is shown to clients (a late /get_trends): it names no host, egress or store.
            raise PutBack(PAUSED_RECHECK, "the fleet's Yahoo call budget could not be read; it waits in the queue",
                          cooling=False) from exc

    def _reserve(self, longest_wait: float, kind: str) -> tuple[int, int]:
        """Ask Redis for the next slot within `longest_wait` s: (reserved, wait ms)."""
        args = [self.interval_ms, self.tolerance_ms, max(int(longest_wait * 1000), 0), self.egress, kind, self._furthest_ms]
        reserved, wait_ms = self._take(keys=self._keys, args=args)
        return reserved, wait_ms

    def _sleep_to_slot(self, wait_ms: int, defer: bool) -> bool:
        """Sleep until a reserved slot; a cool-down begun meanwhile voids it (PutBack, or False)."""
        if not wait_ms:
            return True
        time.sleep(wait_ms / 1000)
        cooling = self.connection.pttl(self._keys[1])
        if cooling > 0 or cooling == -1:
            if defer:
                self._defer(cooling)
            return False
        return True

    def _defer(self, wait_ms: int) -> None:
        """Count a deferral and raise it: ask again when a slot may be free, give or take a little (spreading askers).

        wait_ms -1: the egress is paused by a cool-down key without expiry; ask again in a few seconds.
        """
        cooling = self.connection.exists(self._keys[1]) == 1
        after = PAUSED_RECHECK if wait_ms == -1 else wait_ms / 1000
        self.connection.hincrby(YAHOO_STATS_KEY, f"{self.egress}:deferrals", 1)
        log.info("egress %s: no Yahoo call for %.1f s (%s); a job goes back to its queue", self.egress, after,
                 "cooling down after a 429" if cooling else "budget taken")
        # The reason is shown to clients (a late /get_trends): it names no host or egress.
        reason = (f"Yahoo refused calls (HTTP 429), so they pause for {after:.0f} s" if cooling
                  else f"Yahoo's call budget is taken for the next {after:.0f} s")
        raise PutBack(after * random.uniform(1, 1.2), f"{reason}; it waits in the queue", cooling)

    def defer_after_429(self) -> None:
        """Put the job back after Yahoo answered 429: the cool-down that answer started decides when it comes back."""
        with self._put_back_while_unavailable():
            cooling = self.connection.pttl(self._keys[1])
            self._defer(cooling if cooling > 0 or cooling == -1 else int(self.cooldown * 1000))

    def running_job_is_interactive(self) -> bool:
        """Whether the running job came from a queue other than the bulk one (or runs outside RQ, as in tests)."""
        job = get_current_job()
        return job is None or job.origin != self.bulk_queue

    def observe(self, status: int | None) -> None:
        """Count one call Yahoo answered, by HTTP status ('error': no answer came); a 429 cools the whole egress down."""
        try:
            self.connection.hincrby(YAHOO_STATS_KEY, f"{self.egress}:requests:{status or 'error'}", 1)
            if status == 429 and self._cool_down(keys=self._keys,
                                                 args=[int(self.cooldown * 1000), self.tolerance_ms, self.egress]):
                log.warning("Yahoo answered 429 to egress %s: its calls pause for %g s, then resume at %g a second",
                            self.egress, self.cooldown, self.rate)
        except RedisError as exc:  # the call itself went through; a lost statistic must not fail it
            log.warning("could not record a Yahoo answer for egress %s: %s", self.egress, exc)

"""One budget of calls to Yahoo per egress, shared in Redis by every worker on every host behind it.

Yahoo publishes no limit. What its users report (yfinance issues #2128, #836, #960, #2614) is
about one `history()` call per second per IP address sustained, and HTTP 429 after a burst of a
few hundred. So every fetch first takes a slot from its egress's budget (YAHOO_RATE, bursts of
YAHOO_BURST), whichever worker on whichever host asks; YAHOO_EGRESS names the egress (by default
the host; hosts behind one NAT share one name).

The budget is the generic cell rate algorithm: one number per egress in Redis, the time the next
call may go (the theoretical arrival time, TAT), read and advanced by a script on Redis's own
clock. A take reserves the next slot and says how long to wait for it, so waiting workers are
spaced exactly, without polling. A job waits at most the time its own budget allows; a bulk job at
most `bulk_horizon`, so an interactive symbol waits at most that long behind bulk ones. A job that
would wait longer is put back in its queue (Deferred) instead: it is never lost and never holds a
worker past its timeout.

A 429 from Yahoo (any call: the governor sees every answer) starts a cool-down of the whole
egress (YAHOO_COOLDOWN): no slot is given until it ends, and after it the budget restarts empty,
so calls resume at the steady rate, not with a burst.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job

from jobs.records import YAHOO_STATS_KEY

log = logging.getLogger(__name__)

# KEYS: the egress's TAT, its cool-down flag, the stats hash. ARGV: interval ms, burst tolerance ms,
# the longest wait ms the caller accepts, the egress, 'wait' (the caller waits for its slot) or 'charge'
# (a call already made takes the next slot). Returns {1, wait ms} with a slot reserved, or
# {0, ms until asking again makes sense} without one.
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local cooling = redis.call('PTTL', KEYS[2])
if cooling > 0 then return {0, cooling} end
local interval, tolerance, longest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
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


class Deferred(Exception):  # noqa: N818 (not an error: the job goes back to its queue)
    """The egress has no slot for this job within the time it may wait: put the job back, try again later."""

    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Governor:
    """An egress's share of Yahoo: `rate` calls a second, bursts of `burst`, `cooldown` seconds after a 429."""

    connection: Redis
    egress: str
    rate: float
    burst: int
    cooldown: float
    bulk_queue: str

    def __post_init__(self) -> None:
        self._take = self.connection.register_script(TAKE_SCRIPT)
        self._cool_down = self.connection.register_script(COOL_DOWN_SCRIPT)
        self._prepaid = threading.local()  # whether this thread's next call is the one its slot paid for
        self._keys = [f"trends:yahoo:tat:{self.egress}", f"trends:yahoo:cooldown:{self.egress}", YAHOO_STATS_KEY]
        self.interval_ms = 1000 / self.rate
        self.tolerance_ms = (self.burst - 1) * self.interval_ms
        # A bulk job reserves at most this far ahead: two slots, or a second when slots come faster.
        self.bulk_horizon = max(2 * self.interval_ms / 1000, 1.0)

    def acquire(self, longest_wait: float, interactive: bool) -> None:
        """Take a slot for one fetch, waiting for it up to `longest_wait` s (less for bulk jobs), or raise Deferred."""
        if not interactive:
            longest_wait = min(longest_wait, self.bulk_horizon)
        longest_ms = max(int(longest_wait * 1000), 0)
        args = [self.interval_ms, self.tolerance_ms, longest_ms, self.egress, "wait"]
        reserved, wait_ms = self._take(keys=self._keys, args=args)
        if not reserved:
            self._defer(wait_ms / 1000)
        self._prepaid.covered = True  # the fetch's first call; any other it makes is charged as it happens
        if wait_ms:
            time.sleep(wait_ms / 1000)
            cooling = self.connection.pttl(self._keys[1])  # a 429 while this job waited: its slot is void
            if cooling > 0:
                self._defer(cooling / 1000)

    def _defer(self, after: float) -> None:
        """Count a deferral and raise it, asking again after `after` s give or take a little (spreading the askers)."""
        self.connection.hincrby(YAHOO_STATS_KEY, f"{self.egress}:deferrals", 1)
        raise Deferred(after * random.uniform(1, 1.2), f"egress {self.egress} has no Yahoo call to spare for "
                                                          f"{after:.1f} s; back in the queue")

    def running_job_is_interactive(self) -> bool:
        """Whether the running job came from a queue other than the bulk one (or runs outside RQ, as in tests)."""
        job = get_current_job()
        return job is None or job.origin != self.bulk_queue

    def observe(self, status: int | None) -> None:
        """Count one Yahoo call by HTTP status ('error': no answer), and charge it unless a slot paid for it.

        yfinance makes calls of its own (its cookie and crumb, a second try with its other cookie strategy
        after a 404): each takes the next slot without waiting, so later fetches wait for it instead.
        A 429 cools the whole egress down.
        """
        try:
            if getattr(self._prepaid, "covered", False):
                self._prepaid.covered = False
            else:
                self._take(keys=self._keys, args=[self.interval_ms, self.tolerance_ms, 2**40, self.egress, "charge"])
            self.connection.hincrby(YAHOO_STATS_KEY, f"{self.egress}:requests:{status or 'error'}", 1)
            if status == 429 and self._cool_down(keys=self._keys,
                                                 args=[int(self.cooldown * 1000), self.tolerance_ms, self.egress]):
                log.warning("Yahoo answered 429 to egress %s: its calls pause for %g s, then resume at %g a second",
                            self.egress, self.cooldown, self.rate)
        except RedisError as exc:  # the call itself went through; a lost statistic must not fail it
            log.warning("could not record a Yahoo answer for egress %s: %s", self.egress, exc)

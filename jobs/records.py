"""The Redis keys and names that jobs, workers and the web app share.

RQ keeps each job and its result (`rq:job:ID`, `rq:results:ID`); ours are around it:
- `trends:work:WORK`                 the id of the RQ job currently doing WORK (one symbol's analysis with
                                     given parameters on a day); a new job gets a new id, so a result
                                     someone still reads is never replaced under them
- `trends:analysis:ID`               hash: what an async analysis asked (symbols, parameters, day, job ids)
- `trends:analyses:open`             sorted set: analyses not yet answered in full, by creation time
- `trends:prices:SOURCE:SYMBOL:DAY`  the price cache (jobs/sources.py CachedSource)
- `trends:inflight:WORKER`, `trends:alive:WORKER`  jobs a worker has taken but not yet registered
                                     (jobs/fenced_worker.py), and its heartbeat (jobs/recovery.py)
- `trends:inflight-workers`          set: workers that may hold jobs in an in-flight list
- `trends:doorbell`                  list: one ring per job a claim queues; idle workers block on it
                                     (jobs/fenced_worker.py)
- `trends:fair:QUEUE`                sorted set: the clients with jobs staged for QUEUE (each in the RQ
                                     queue `QUEUE@CLIENT`), scored by jobs taken: workers serve them in turn
- `trends:doorbell:QUEUE`            list: one ring per job staged for QUEUE, for workers that may take only from it
- `trends:memory:promised:SECOND`    the bytes web processes promised to work admitted in that second (admission)
Imported by the web app too, so it must stay free of heavy imports.
"""
import datetime as dt
import hashlib
import re
from collections.abc import Callable
from importlib.metadata import version

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

VERSION = version("stock-trends")  # the project's, from its package metadata (pyproject.toml)
DEFAULT_LEVEL = 0.8  # the likely range's level when a request names none: an 80 % range
# hash "<queue>:<outcome>" → count of symbols that ended so, kept by the workers, read by /metrics
JOB_STATS_KEY = "trends:stats:jobs"
# Why a symbol's job ended: a result, or the cause of its failure (jobs/tasks.py `outcome_of`).
OUTCOMES = ("ok", "unknown_symbol", "no_data", "rate_limited", "source_unavailable", "timeout", "worker_lost",
            "refused", "error")
# Why a symbol failed, as its error result's "reason" says (docs/api.md): a failed job's outcome, or no answer in
# time ("late"), or its job gone before it was read ("expired").
FAILURE_REASONS = (*(outcome for outcome in OUTCOMES if outcome != "ok"), "late", "expired")
PRICE_STATS_KEY = "trends:stats:prices"  # hash lookups, misses of the price cache, read by /metrics
# hash "<egress>:<counter>" → value, kept by the workers' Yahoo source (jobs/governor.py), read by /metrics:
# "requests:<HTTP status or 'error'>", "waits" (token waits), "wait_seconds", "cooldowns", "deferrals"
YAHOO_STATS_KEY = "trends:stats:yahoo"
OPEN_ANALYSES_KEY = "trends:analyses:open"
# What a Redis that cannot take writes now raises, unreachable or full (maxmemory reached; a MULTI
# whose writes it refused is aborted whole): workers keep what they hold and wait it out, the
# governor puts its job back. The workers pass what they catch to jobs/recovery.py `no_outage` first:
# a refused password is a setting to fix, and a transaction aborted for another reason a fault to see.
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ExecAbortError)
INFLIGHT_PREFIX = "trends:inflight:"
INFLIGHT_WORKERS_KEY = "trends:inflight-workers"
DOORBELL_KEY = "trends:doorbell"
RECOVERY_LOCK_KEY = "trends:inflight:recovery-lock"  # one worker at a time recovers lost workers' lists
DOORBELL_RINGS = 1024  # at most this many rings wait: enough to wake every idle worker of a large fleet



def rq_time(raw: bytes) -> float:
    """Read a time RQ wrote in a job hash (its utcformat: ISO 8601, UTC): fromisoformat is 40 times RQ's utcparse."""
    return dt.datetime.fromisoformat(raw.decode()).timestamp()


def trading_day() -> str:
    """Name the day of shared jobs and cached prices: the UTC date, the same on every host whatever its time zone."""
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def record_key(analysis_id: str) -> str:
    """Name the hash that records what an async analysis asked."""
    return f"trends:analysis:{analysis_id}"


def prices_key(source: str, symbol: str, day: str) -> str:
    """Name the price cache entry of one symbol from one source (its PRICE_SOURCE setting) on one day."""
    return f"trends:prices:{source}:{symbol}:{day}"


def work_id(symbol: str, window: int, horizon: int, method: str, level: float, day: str, source: str) -> str:
    """Give the same work on the same day from the same price source (PRICE_SOURCE) the same id.

    RQ ids allow only letters, digits, - and _. The source is part of the work: after `make demo`,
    `make run` on the same Redis must not answer with the demo's synthetic result.
    """
    digest = hashlib.sha1(f"{symbol}|{window}|{horizon}|{method}|{level:g}|{day}|{source}".encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9-]', '_', symbol)}-{digest}"


def inflight_key(worker: str) -> str:
    """Name the list of jobs a worker has taken but not yet registered."""
    return f"{INFLIGHT_PREFIX}{worker}"


def alive_key(worker: str) -> str:
    """Name a worker's heartbeat key, which expires when the worker stops beating."""
    return f"trends:alive:{worker}"


def fair_key(queue_name: str) -> str:
    """Name the sorted set of a queue's clients with staged jobs, scored by how many of theirs were taken (round robin)."""
    return f"trends:fair:{queue_name}"


def promised_key(second: int) -> str:
    """Name the counter of bytes the web processes promised to work admitted in `second` (webapp/capacity.py)."""
    return f"trends:memory:promised:{second}"


def turns_doorbell_key(queue_name: str) -> str:
    """Name the list rung once per job staged for `queue_name`: a worker that may take only from it blocks on it."""
    return f"{DOORBELL_KEY}:{queue_name}"


def staged_queue_name(queue_name: str, client: str) -> str:
    """Name the RQ queue where one client's jobs for `queue_name` wait their turn (rq-dashboard lists it)."""
    return f"{queue_name}@{client}"


def current_job_key(work: str) -> str:
    """Name the pointer to the RQ job currently doing a work."""
    return f"trends:work:{work}"


# Lua that applies commands passed as words (see `recorded`) from ARGV[i] on; the scripts that use it
# first check, atomically, that what they are about to write is still theirs to write.
APPLY_RECORDED = """
local function apply(i, count)
  for _ = 1, count do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
  return i
end
local function skip(i, count)
  for _ = 1, count do i = i + tonumber(ARGV[i]) + 1 end
  return i
end
"""


def recorded(connection: Redis, build: Callable[[Pipeline], object]) -> tuple[int, list[object]]:
    """Record what `build` queues on a pipeline that is never sent: (how many commands, [length, words...] each).

    So RQ's own code writes RQ's data model, and a script applies it in the same round trip as its check.
    """
    recorder = connection.pipeline(transaction=False)
    build(recorder)
    words: list[object] = []
    for args, _ in recorder.command_stack:
        words += [len(args), *args]
    count = len(recorder.command_stack)
    recorder.reset()
    return count, words

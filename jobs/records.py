"""The Redis records analyses and jobs share, and the one place a result is delivered to them.

One job per (symbol, window, horizon, method, day) is shared by every analysis that asks for it:
- `trends:analysis:ID`           hash: symbols (JSON list), window, horizon, method, day
- `trends:analysis:ID:results`   hash: symbol → result JSON
- `trends:analysis:ID:done`      list: one entry per delivered symbol, so a waiter can block (BLPOP)
- `trends:subscribers:JOB`       set: the analyses waiting for job JOB
- `trends:recent:JOB`            the job's last result, reused while fresh (errors only briefly)
- `trends:prices:SOURCE:SYMBOL:DAY`  the price cache (jobs/sources.py CachedSource)
Imported by the web app too, so it must stay free of heavy imports.
"""
import hashlib
import re

JOB_STATS_KEY = "trends:stats:jobs"  # hash "<queue>:<finished|failed>" → count, read by /metrics
PRICE_STATS_KEY = "trends:stats:prices"  # hash lookups, misses of the price cache, read by /metrics
ERROR_REUSE_SECONDS = 10  # long enough to close the race between a job ending and a new subscriber


def record_key(analysis_id: str) -> str:
    return f"trends:analysis:{analysis_id}"


def subscribers_key(job_id: str) -> str:
    return f"trends:subscribers:{job_id}"


def recent_key(job_id: str) -> str:
    return f"trends:recent:{job_id}"


def prices_key(source: str, symbol: str, day: str) -> str:
    return f"trends:prices:{source}:{symbol}:{day}"


def shared_job_id(symbol: str, window: int, horizon: int, method: str, day: str) -> str:
    """The same id for the same work on the same day; RQ ids allow only letters, digits, - and _."""
    digest = hashlib.sha1(f"{symbol}|{window}|{horizon}|{method}|{day}".encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9-]', '_', symbol)}-{digest}"


def deliver(pipe, analysis_ids, symbol: str, result_json: str, ttl: int) -> None:
    """Queue on `pipe` the writes that hand a result to each analysis and wake its waiter."""
    for analysis_id in analysis_ids:
        key = record_key(analysis_id)
        pipe.hset(f"{key}:results", symbol, result_json)
        pipe.rpush(f"{key}:done", symbol)
        pipe.expire(f"{key}:results", ttl)
        pipe.expire(f"{key}:done", ttl)


# What deliver() does, for every subscriber, in the same atomic step that keeps the result:
# one round trip per job instead of two, and no subscriber can slip in between.
PUBLISH_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for _, analysis in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[6] .. analysis
  redis.call('HSET', key .. ':results', ARGV[3], ARGV[1])
  redis.call('RPUSH', key .. ':done', ARGV[3])
  redis.call('EXPIRE', key .. ':results', ARGV[4])
  redis.call('EXPIRE', key .. ':done', ARGV[4])
end
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
"""


def publish(connection, job, symbol: str, result_json: str, ok: bool, outcome: str) -> None:
    """Keep the result for reuse and deliver it to every subscribed analysis, atomically.

    The web app subscribes and reads `trends:recent:` in one MULTI, so any analysis either is
    delivered to here or finds the result there.
    """
    keep = max(job.meta["reuse"], ERROR_REUSE_SECONDS) if ok else ERROR_REUSE_SECONDS
    keys = [recent_key(job.id), subscribers_key(job.id), JOB_STATS_KEY]
    args = [result_json, keep, symbol, job.meta["ttl"], f"{job.origin}:{outcome}", record_key("")]
    _publish_script(connection)(keys, args)


_scripts: dict = {}


def _publish_script(connection):
    """The script object for this connection, made once (it is sent once, then called by its SHA)."""
    if id(connection) not in _scripts:
        _scripts[id(connection)] = connection.register_script(PUBLISH_SCRIPT)
    return _scripts[id(connection)]

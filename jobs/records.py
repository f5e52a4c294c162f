"""The Redis records analyses and jobs share, and the one place a result is delivered to them.

One job per (symbol, window, horizon, day) is shared by every analysis that asks for it:
- `trends:analysis:ID`           hash: symbols (JSON list), window, horizon, day
- `trends:analysis:ID:results`   hash: symbol → result JSON
- `trends:analysis:ID:done`      list: one entry per delivered symbol, so a waiter can block (BLPOP)
- `trends:subscribers:JOB`       set: the analyses waiting for job JOB
- `trends:recent:JOB`            the job's last result, reused while fresh (errors only briefly)
Imported by the web app too, so it must stay free of heavy imports.
"""
import hashlib
import json
import re

ERROR_REUSE_SECONDS = 10  # long enough to close the race between a job ending and a new subscriber


def record_key(analysis_id: str) -> str:
    return f"trends:analysis:{analysis_id}"


def subscribers_key(job_id: str) -> str:
    return f"trends:subscribers:{job_id}"


def recent_key(job_id: str) -> str:
    return f"trends:recent:{job_id}"


def shared_job_id(symbol: str, window: int, horizon: int, day: str) -> str:
    """The same id for the same work on the same day; RQ ids allow only letters, digits, - and _."""
    digest = hashlib.sha1(f"{symbol}|{window}|{horizon}|{day}".encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9-]', '_', symbol)}-{digest}"


def deliver(pipe, analysis_ids, result: dict, ttl: int) -> None:
    """Queue on `pipe` the writes that hand `result` to each analysis and wake its waiter."""
    for analysis_id in analysis_ids:
        key = record_key(analysis_id if isinstance(analysis_id, str) else analysis_id.decode())
        pipe.hset(f"{key}:results", result["symbol"], json.dumps(result))
        pipe.rpush(f"{key}:done", result["symbol"])
        pipe.expire(f"{key}:results", ttl)
        pipe.expire(f"{key}:done", ttl)


def publish(connection, job_id: str, result: dict, ttl: int, reuse_seconds: int, outcome: str, queue: str) -> None:
    """Keep the result for reuse, then deliver it to every subscribed analysis.

    `trends:recent:` is written in the same MULTI that reads the subscribers; the web app subscribes and
    reads it in one MULTI too, so any analysis either is delivered to here or finds it there.
    """
    keep = ERROR_REUSE_SECONDS if "error" in result else max(reuse_seconds, ERROR_REUSE_SECONDS)
    pipe = connection.pipeline(transaction=True)
    pipe.set(recent_key(job_id), json.dumps(result), ex=keep)
    pipe.smembers(subscribers_key(job_id))
    subscribers = pipe.execute()[1]
    pipe = connection.pipeline(transaction=False)
    deliver(pipe, subscribers, result, ttl)
    pipe.hincrby("trends:stats:jobs", f"{queue}:{outcome}", 1)  # read by /metrics
    pipe.execute()

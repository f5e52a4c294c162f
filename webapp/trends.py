"""Runs a trends request on the fleet: one RQ job per symbol, then waits for their replies.

Each job's success/failure callback pushes its result onto a list private to the request, so
the web process blocks on that list (BLPOP) instead of polling job statuses.
"""
import json
import time
import uuid

from redis import Redis
from rq import Callback, Queue

from webapp.validation import TrendsRequest

ANALYZE = "jobs.tasks.analyze_symbol"
ON_SUCCESS = Callback("jobs.tasks.report_success")
ON_FAILURE = Callback("jobs.tasks.report_failure")
SUCCESS_MESSAGE = "Trends and predictions calculated successfully"


def run_trends(redis: Redis, queue: Queue, request: TrendsRequest, settings) -> dict:
    """Enqueue the request's jobs in one round trip and assemble the response body from their replies."""
    reply_to = f"trends:replies:{uuid.uuid4().hex}"
    jobs = [
        Queue.prepare_data(
            ANALYZE,
            args=(symbol, request.window, request.horizon),
            timeout=settings["JOB_TIMEOUT"],
            result_ttl=settings["RESULT_TTL"],
            failure_ttl=settings["RESULT_TTL"],
            meta={"reply_to": reply_to},
            on_success=ON_SUCCESS,
            on_failure=ON_FAILURE,
        )
        for symbol in request.symbols
    ]
    queue.enqueue_many(jobs)
    try:
        replies = _wait_for_replies(redis, reply_to, len(jobs), settings["TRENDS_TIMEOUT"])
    finally:
        redis.delete(reply_to)
    timed_out = f"no worker finished this symbol within {settings['TRENDS_TIMEOUT']} s; are workers running?"
    results = [replies.get(symbol) or {"symbol": symbol, "error": f"{symbol}: {timed_out}"} for symbol in request.symbols]
    return response_body(results)


def _wait_for_replies(redis: Redis, reply_to: str, expected: int, timeout: float) -> dict[str, dict]:
    """Collect replies keyed by symbol until all arrived or the deadline passed."""
    deadline = time.monotonic() + timeout
    replies: dict[str, dict] = {}
    while len(replies) < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Short blocking slices keep the socket timeout small and the deadline exact.
        popped = redis.blpop([reply_to], timeout=min(remaining, 1.0))
        if popped is None:
            continue
        batch = [popped[1]] + (redis.lpop(reply_to, expected) or [])
        for raw in batch:
            result = json.loads(raw)
            replies[result["symbol"]] = result
    return replies


def response_body(results: list[dict]) -> dict:
    """Top-level status and message for per-symbol results, as the API contract words them."""
    failed = [r["symbol"] for r in results if "error" in r]
    if not failed:
        return {"results": results, "status": "success", "message": SUCCESS_MESSAGE}
    if len(failed) == len(results):
        return {"results": results, "status": "error", "message": "No symbol could be analysed; each result's error says why"}
    return {
        "results": results,
        "status": "partial",
        "message": f"{len(failed)} of {len(results)} symbols failed ({', '.join(failed)}); each result's error says why",
    }

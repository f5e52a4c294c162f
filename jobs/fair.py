"""Clients' turns in a queue: what waits in it, counting each client's staged queue.

The web app stages a client's new interactive jobs in an RQ queue of their own (`QUEUE@CLIENT`,
webapp/shared_jobs.py CLAIM_SCRIPT), and workers take from those in turn, the client served least
first (jobs/worker_scripts.py TAKE): one client's deep backlog holds another's job back by about one
job per worker, and rq-dashboard still lists what waits where. The queue's own list keeps what is
queued again (retries, recovered and put-back jobs), taken before any client's turn.
"""
from __future__ import annotations

import time

from redis import Redis
from rq import Queue

from jobs.records import fair_key, rq_time


def staged_queues(redis: Redis, queue: Queue) -> list[Queue]:
    """List the queue's clients' staged queues, the next to be served first."""
    return [Queue.from_queue_key(key.decode(), connection=redis, serializer=queue.serializer)
            for key in redis.zrange(fair_key(queue.name), 0, -1)]


def waiting(redis: Redis, queue: Queue) -> tuple[int, float]:
    """Count the jobs waiting for `queue`, and give the age in seconds of the oldest at the head of its list or a client's.

    A staged job's `origin` is its queue, not the client's, so RQ's `Queue.fetch_job` on a client's queue
    finds none: the heads' enqueue times are read from their hashes.
    """
    lists = [queue, *staged_queues(redis, queue)]
    pipe = redis.pipeline(transaction=False)
    for each in lists:
        pipe.llen(each.key)
        pipe.lindex(each.key, 0)
    replies = pipe.execute()
    heads = [head.decode() for head in replies[1::2] if head]
    for head in heads:
        pipe.hget(queue.job_class.key_for(head), "enqueued_at")
    ages = [time.time() - rq_time(raw) for raw in (pipe.execute() if heads else []) if raw]
    return sum(replies[0::2]), max(ages, default=0.0)


def backlog(redis: Redis, queues: list[Queue]) -> tuple[int, float]:
    """Count the jobs waiting in all `queues` (clients' staged jobs included), and give the oldest's age at a head."""
    each = [waiting(redis, queue) for queue in queues]
    return sum(depth for depth, _ in each), max((age for _, age in each), default=0.0)

"""The Lua the workers run: each step that must not be split (take, fenced write, recovery, reaping) is one script.

RQ's key names are never written here: every script gets RQ's job and queue key prefixes in ARGV[1]
and ARGV[2] (`rq_prefixes`, from RQ's own classes, so `RQ_KEY_PREFIX` holds), as RQ's own
`rate_limit.py` passes its prefixes. The project's own keys (`trends:`) are named in jobs/records.py.
"""
from __future__ import annotations

from rq.job import Job
from rq.queue import Queue

from jobs.records import APPLY_RECORDED, INFLIGHT_PREFIX, INFLIGHT_WORKERS_KEY


def rq_prefixes(job_class: type[Job], queue_class: type[Queue]) -> list[str]:
    """RQ's job and queue key prefixes (ARGV[1], ARGV[2] of every script here), as RQ's classes build them."""
    return [job_class.redis_job_namespace_prefix, queue_class.redis_queue_namespace_prefix]


# take(i): KEYS[i] is this worker's in-flight list, KEYS[i+1] the fleet's doorbell, KEYS[i+2] RQ's set of
# queues, then per queue in priority order its key and its clients' turns (jobs/records.py `fair_key`).
# Move the first job of the first queue with one to the in-flight list: the queue's own list first (jobs
# queued again: retried, recovered, put back), then its clients' staged lists in turn, the one served
# least first (round robin: a client with a deep backlog holds back another's job by at most one). Give
# {queue key, job id, the job's hash as a flat list} (the hash in the same round trip), or false when
# every queue is empty. A job already in the in-flight list (taken, but its reply or registration lost
# to a Redis error) comes first, so taking again after an error (redis-py retries commands) never strands
# one. The worker is listed among those whose lists are recovered if they die, in the same step: a
# worker back from a pause, delisted meanwhile, may take before its heartbeat lists it again. Nothing
# is written while every queue is empty, so a full Redis (which refuses writes) still lets it wait. When
# every queue is empty, the doorbell's rings are all stale (each rang for a job that is taken now):
# it is emptied (unless its key is given as ''), so idle workers block on it until the next enqueue.
TAKE = """
local function staged(turns, inflight, queues)
  for _ = 1, 64 do  -- a client's list emptied by hand leaves its turn behind: skip a few such
    local first = redis.call('ZRANGE', turns, 0, 0)[1]
    if not first then return nil end
    local job_id = redis.call('LMOVE', first, inflight, 'LEFT', 'RIGHT')
    if job_id and redis.call('LLEN', first) > 0 then
      redis.call('ZINCRBY', turns, 1, first)
    else
      redis.call('ZREM', turns, first)
      redis.call('SREM', queues, first)
    end
    if job_id then return job_id end
  end
  return nil
end
local function take(i)
  local inflight = KEYS[i]
  local held = redis.call('LINDEX', inflight, 0)
  if held then
    local origin = redis.call('HGET', ARGV[1] .. held, 'origin') or ''
    return {ARGV[2] .. origin, held, redis.call('HGETALL', ARGV[1] .. held)}
  end
  for q = i + 3, #KEYS, 2 do
    local job_id = nil
    if redis.call('LLEN', KEYS[q]) > 0 or redis.call('EXISTS', KEYS[q + 1]) == 1 then
      redis.call('SADD', '""" + INFLIGHT_WORKERS_KEY + """', string.sub(inflight, #'""" + INFLIGHT_PREFIX + """' + 1))
      job_id = redis.call('LMOVE', KEYS[q], inflight, 'LEFT', 'RIGHT') or staged(KEYS[q + 1], inflight, KEYS[i + 2])
    end
    if job_id then return {KEYS[q], job_id, redis.call('HGETALL', ARGV[1] .. job_id)} end
  end
  if KEYS[i + 1] ~= '' then redis.call('DEL', KEYS[i + 1]) end
  return false
end
"""
TAKE_SCRIPT = TAKE + "return take(1)"

# Apply RQ's own bookkeeping for a job (ARGV[6..]: ARGV[5] commands that RQ's code queued on a
# pipeline that is never sent: jobs/records.py `recorded`) only if this attempt still owns the job:
# the job id ARGV[4] is still in this worker's in-flight list KEYS[1] (ARGV[3] 'list') and neither
# deleted nor cancelled since it was taken (then it leaves the list, not run), or the attempt is
# still registered in its queue's started registry KEYS[1] (ARGV[3] 'zset'). Returns 1 if applied.
# One round trip, atomic: what WATCH, a read and MULTI/EXEC did in three.
# With more KEYS (`rq suspend`'s key, then take()'s keys), an outcome's write also takes the worker's
# next job, unless the fleet is suspended: {1 or 0, what take() gives}. One round trip less a job.
GUARDED_SCRIPT = APPLY_RECORDED + TAKE + """
local owned, applied = nil, 0
if ARGV[3] == 'list' then
  owned = redis.call('LPOS', KEYS[1], ARGV[4])
  local status = redis.call('HGET', ARGV[1] .. ARGV[4], 'status')
  if owned and (not status or status == 'canceled') then
    redis.call('LREM', KEYS[1], 1, ARGV[4])
    owned = nil
  end
else
  owned = redis.call('ZSCORE', KEYS[1], ARGV[4])
end
if owned then
  apply(6, tonumber(ARGV[5]))
  applied = 1
end
if #KEYS == 1 then return applied end
if redis.call('EXISTS', KEYS[2]) == 1 then return {applied, false} end
return {applied, take(3)}
"""

# The fenced reaper: give up on the expired attempt ARGV[3] (`job:execution`, in the started registry
# KEYS[1]) only if it is still registered and still expired at ARGV[4] (not renewed by a heartbeat),
# removing it in the same step; then, if its job is still started, apply RQ's retry or failure
# (ARGV[5] recorded commands from ARGV[6]) and ring the doorbell KEYS[2]. An attempt that stored its
# outcome first has left the registry, so the two cannot both win. Returns 1 if the job was given up on.
REAP_SCRIPT = APPLY_RECORDED + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not score or tonumber(score) > tonumber(ARGV[4]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[3])
local job_id = string.match(ARGV[3], '^(.*):[^:]*$') or ARGV[3]
if redis.call('HGET', ARGV[1] .. job_id, 'status') ~= 'started' then return 0 end
apply(6, tonumber(ARGV[5]))
redis.call('LPUSH', KEYS[2], 1)
return 1
"""

# A worker whose alive key (KEYS[1]) has expired, or any worker giving back its own (ARGV[4] 'own'):
# put each job in its in-flight list (KEYS[2]) that is still queued back at the front of its queue,
# ring the doorbell (KEYS[4]) for them, then forget the list and delist the worker ARGV[3] (KEYS[3]).
# Atomic, so a worker coming back either finds its job still in the list (and runs it) or not.
RECOVER_SCRIPT = """
if ARGV[4] ~= 'own' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
for _, id in ipairs(ids) do
  local status = redis.call('HGET', ARGV[1] .. id, 'status')
  local origin = redis.call('HGET', ARGV[1] .. id, 'origin')
  if status == 'queued' and origin then
    redis.call('LPUSH', ARGV[2] .. origin, id)
    redis.call('LPUSH', KEYS[4], 1)
  end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[3])
return #ids
"""

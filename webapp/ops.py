"""Operations: /livez for load balancers, /healthz for operators, /metrics (Prometheus text), rq-dashboard at /rq."""
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import rq_dashboard
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask_limiter import Limiter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, Metric, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel, SentinelConnectionPool
from rq import Queue, worker_registration
from rq.serializers import JSONSerializer

from jobs.fair import waiting
from jobs.records import JOB_STATS_KEY, OUTCOMES, PRICE_STATS_KEY, YAHOO_STATS_KEY
from webapp.errors import redis_trouble
from webapp.security import guard_dashboard

bp = Blueprint("ops", __name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Kept in this process (in PROMETHEUS_MULTIPROC_DIR's files under gunicorn); registered per scrape, see `metrics`.
LATENCY = Histogram("trends_http_request_duration_seconds", "Time to answer API requests.", ["endpoint"],
                    buckets=LATENCY_BUCKETS, registry=None)


def queue_report(queue: Queue) -> dict[str, float]:
    """Depth and the age of the oldest waiting job of one queue, its clients' staged jobs included."""
    depth, age = waiting(queue.connection, queue)
    return {"depth": depth, "oldest_age_seconds": round(age, 3)}


@bp.get("/livez")
def livez() -> Response | tuple[Response, int]:
    """For load balancers: 200 while this web process and Redis answer; the fleet's state does not matter here."""
    try:
        current_app.redis.ping()
    except RedisError as exc:
        return jsonify({"status": "error", "redis": False, "reason": redis_trouble(exc)}), 503
    return jsonify({"status": "ok", "redis": True})


@bp.get("/healthz")
def healthz() -> Response | tuple[Response, int]:
    """For operators: the fleet (workers per host, source and version; queues; a Sentinel group's replication).

    503 without Redis or a live worker.
    """
    try:
        workers = fleet(current_app.redis)
        queues = {queue.name: queue_report(queue) for queue in current_app.queues}
        redis_group = replication(current_app.redis)
    except RedisError as exc:
        return jsonify({"status": "error", "redis": False, "reason": redis_trouble(exc)}), 503
    body = {"status": "ok", "redis": True, "workers": len(workers), "hosts": _count(workers, "host"),
            "sources": _count(workers, "source"), "versions": _count(workers, "version"), "queues": queues}
    if redis_group:
        body["replication"] = redis_group
    if not workers:
        body.update(status="error", reason="no worker is alive: start some with `make worker`")
        return jsonify(body), 503
    return jsonify(body)


def replication(redis: Redis) -> dict[str, object]:
    """In a Sentinel group, give the primary, its replicas with their lag (s) and the failovers so far; else nothing.

    `failover_epoch` is the sentinels' configuration epoch for the service, up by one or more with each
    failover; `primary_for_seconds`, since the sentinels saw the primary become one (the last failover).
    """
    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return {}  # one server: nothing to report (and INFO is an admin command the web app's ACL user may lack)
    info = redis.info("replication")
    replicas = [{"address": f"{fields['ip']}:{fields['port']}", "state": fields.get("state"),
                 "lag_seconds": fields.get("lag")}
                for name, fields in info.items() if re.fullmatch(r"slave\d+", name) and isinstance(fields, dict)]
    host, port = pool.get_master_address()
    return {"role": info.get("role"), "primary": f"{host}:{port}", "replicas": replicas,
            **_sentinels_view(pool.sentinel_manager, pool.service_name)}


def _sentinels_view(sentinel: Sentinel, service: str) -> dict[str, float | int]:
    """Give the group's epoch (up with each failover) and how long the primary has been one (s), as a sentinel says."""
    for one in sentinel.sentinels:
        try:
            state = one.sentinel_master(service)
            return {"failover_epoch": int(state["config-epoch"]),
                    "primary_for_seconds": int(state["role-reported-time"]) / 1000}
        except (RedisError, KeyError, ValueError):
            continue
    return {}


def fleet(redis: Redis) -> list[dict[str, str | None]]:
    """Read the live workers' host, price source and version from their RQ hashes in two round trips."""
    pipe = redis.pipeline(transaction=False)
    for key in worker_registration.get_keys(connection=redis):
        pipe.hgetall(key)
    # A worker gone since has no hash; a key that is not a hash (planted) is left out.
    return [_worker_facts(facts) for facts in pipe.execute(raise_on_error=False) if facts and isinstance(facts, dict)]


def _worker_facts(facts: dict[bytes, bytes]) -> dict[str, str | None]:
    def text(field: str, default: str | None) -> str | None:
        return facts[field.encode()].decode(errors="replace") if facts.get(field.encode()) else default

    # Workers older than the trends_* fields report "unknown"; a hash re-created without a hostname has host None.
    return {"host": text("hostname", None), "source": text("trends_source", "unknown"),
            "version": text("trends_version", "unknown")}


def _count(workers: list[dict[str, str | None]], fact: str) -> dict[str | None, int]:
    return dict(Counter(worker[fact] for worker in workers))


@bp.get("/metrics")
def metrics() -> Response:
    """Report job outcomes, Yahoo traffic, queues, workers, price-cache hits and API latency for Prometheus."""
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # under gunicorn: the latency of every web process, summed
        MultiProcessCollector(registry)
    else:
        registry.register(LATENCY)
    registry.register(RedisCollector(current_app.redis, current_app.queues))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class RedisCollector(Collector):
    """The fleet's counters that the workers keep in Redis, read at scrape time."""

    def __init__(self, redis: Redis, queues: Sequence[Queue]) -> None:
        self.redis = redis
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of the counters, queues and workers."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (JOB_STATS_KEY, YAHOO_STATS_KEY, PRICE_STATS_KEY):
            pipe.hgetall(key)
        jobs, yahoo, prices = (_counters(reply) for reply in pipe.execute(raise_on_error=False))
        yield self._symbols(jobs)
        yield from _yahoo(yahoo)
        price_cache = CounterMetricFamily("trends_price_cache", "Price cache lookups by result.", labels=["result"])
        misses = prices.get("misses", 0)
        price_cache.add_metric(["hit"], prices.get("lookups", 0) - misses)
        price_cache.add_metric(["miss"], misses)
        yield price_cache
        yield from self._queues()
        workers = GaugeMetricFamily("trends_workers", "Live workers, by host, price source and version.",
                                    labels=["host", "source", "version"])
        kinds = Counter((str(w["host"]), str(w["source"]), str(w["version"])) for w in fleet(self.redis))
        for labels, count in sorted(kinds.items()):
            workers.add_metric(list(labels), count)
        yield workers
        report = replication(self.redis)
        if report:
            yield from _replication(report)

    def _symbols(self, jobs: dict[str, float]) -> CounterMetricFamily:
        # Every outcome of every queue, 0 until it happens, so alerts can name them; and whatever else is counted.
        counts = {(queue.name, outcome): 0.0 for queue in self.queues for outcome in OUTCOMES}
        counts.update({tuple(field.rsplit(":", 1)): value for field, value in jobs.items() if ":" in field})
        family = CounterMetricFamily("trends_symbols", "Symbols whose job ended, by queue and outcome.",
                                     labels=["queue", "outcome"])
        for labels, value in sorted(counts.items()):
            family.add_metric(list(labels), value)
        return family

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("trends_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        age = GaugeMetricFamily("trends_oldest_queued_job_age_seconds", "Age of the oldest waiting job.", labels=["queue"])
        for queue in self.queues:
            report = queue_report(queue)
            depth.add_metric([queue.name], report["depth"])
            age.add_metric([queue.name], report["oldest_age_seconds"])
        yield depth
        yield age


YAHOO_COUNTERS = {  # counter in YAHOO_STATS_KEY → the family it is exported as, by egress
    "waits": ("trends_yahoo_governor_waits", "Requests that waited for a token of the Yahoo rate governor."),
    "wait_seconds": ("trends_yahoo_governor_wait_seconds", "Time requests waited for a token of the Yahoo rate governor."),
    "cooldowns": ("trends_yahoo_cooldowns", "Cooldowns Yahoo's rate limiting imposed on an egress."),
    "deferrals": ("trends_yahoo_deferrals", "Jobs put back in their queue: their egress had no call to spare in time."),
}


def _counters(reply: dict[bytes, bytes] | Exception) -> dict[str, float]:
    """Read a counters hash as text → number, leaving out what is not one (planted or damaged data never fails a scrape)."""
    if not isinstance(reply, dict):  # not a hash (WRONGTYPE)
        return {}
    counters = {}
    for field, value in reply.items():
        try:
            counters[field.decode(errors="replace")] = float(value)
        except ValueError:
            continue
    return counters


def _yahoo(stats: dict[str, float]) -> Iterator[Metric]:
    requests = CounterMetricFamily("trends_yahoo_requests", "Requests to Yahoo, by egress and HTTP status (or 'error').",
                                   labels=["egress", "status"])
    families = {counter: CounterMetricFamily(name, text, labels=["egress"]) for counter, (name, text) in YAHOO_COUNTERS.items()}
    for field, value in sorted(stats.items()):
        if ":" not in field:
            continue
        egress, counter = field.split(":", 1)
        if counter.startswith("requests:"):
            requests.add_metric([egress, counter.removeprefix("requests:")], value)
        elif counter in families:
            families[counter].add_metric([egress], value)
    yield requests
    yield from families.values()


def _replication(report: dict) -> Iterator[Metric]:
    replicas = GaugeMetricFamily("trends_redis_replicas", "Replicas connected to the Redis primary.")
    replicas.add_metric([], len(report["replicas"]))
    yield replicas
    lag = GaugeMetricFamily("trends_redis_replica_lag_seconds", "Seconds since each replica last acknowledged the primary.",
                            labels=["replica"])
    for replica in report["replicas"]:
        lag.add_metric([replica["address"]], float(replica["lag_seconds"] or 0))
    yield lag
    primary = GaugeMetricFamily("trends_redis_primary", "The Sentinel group's primary (1).", labels=["address"])
    primary.add_metric([report["primary"]], 1)
    yield primary
    if report.get("failover_epoch") is not None:
        epoch = CounterMetricFamily("trends_redis_failover_epoch", "The Sentinel group's epoch: up by one or more a failover.")
        epoch.add_metric([], report["failover_epoch"])
        yield epoch
        since = GaugeMetricFamily("trends_redis_primary_for_seconds", "Since the sentinels saw the primary become one.")
        since.add_metric([], report["primary_for_seconds"])
        yield since


def record_latency(app: Flask) -> None:
    """Time every API request into this process's histogram (summed over the web processes at scrape time)."""

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        if request.blueprint == "api" and "started" in g:
            LATENCY.labels(request.endpoint.split(".", 1)[1]).observe(time.perf_counter() - g.started)
        return response


def mount_dashboard(app: Flask, limiter: Limiter) -> None:
    """rq-dashboard at /rq, only with DASHBOARD_PASSWORD set: it can delete and requeue jobs."""
    password = app.config["DASHBOARD_PASSWORD"]
    if not password:
        return  # /rq stays a 404: never an open dashboard
    rq_dashboard.web.config.serializer = JSONSerializer  # our jobs are JSON; never unpickle
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["REDIS_URL"]  # rq-dashboard reads redis+sentinel:// too
    app.config["RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD"] = app.config["REDIS_SENTINEL_PASSWORD"] or None
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    guard_dashboard(app, limiter)  # and its login

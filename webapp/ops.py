"""Operations: /livez for load balancers, /healthz for operators, /metrics (Prometheus text), rq-dashboard at /rq."""
import hmac
import time
from collections import Counter

import rq_dashboard
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask_limiter import Limiter
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from jobs.records import JOB_STATS_KEY, PRICE_STATS_KEY
from webapp.security import guard_dashboard

bp = Blueprint("ops", __name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_KEY = "trends:stats:http"  # hash: "<endpoint>:<bucket index>", "<endpoint>:count", "<endpoint>:sum"


def queue_report(queue: Queue) -> dict[str, float]:
    """Depth and the age of the oldest queued job of one queue."""
    oldest_ids = queue.get_job_ids(0, 1)
    oldest = queue.fetch_job(oldest_ids[0]) if oldest_ids else None
    age = time.time() - oldest.enqueued_at.timestamp() if oldest and oldest.enqueued_at else 0.0
    return {"depth": queue.count, "oldest_age_seconds": round(age, 3)}


@bp.get("/livez")
def livez() -> Response | tuple[Response, int]:
    """For load balancers: 200 while this web process and Redis answer; the fleet's state does not matter here."""
    try:
        current_app.redis.ping()
    except RedisError as exc:
        return jsonify({"status": "error", "redis": False, "reason": f"Redis is unreachable: {exc}"}), 503
    return jsonify({"status": "ok", "redis": True})


@bp.get("/healthz")
def healthz() -> Response | tuple[Response, int]:
    """For operators: the fleet (workers per host, queues); 503 when Redis is unreachable or no worker is alive."""
    try:
        workers = Worker.all(connection=current_app.redis)
        queues = {queue.name: queue_report(queue) for queue in current_app.queues}
    except RedisError as exc:
        return jsonify({"status": "error", "redis": False, "reason": f"Redis is unreachable: {exc}"}), 503
    hosts = Counter(worker.hostname for worker in workers)
    body = {"status": "ok", "redis": True, "workers": len(workers), "hosts": dict(hosts), "queues": queues}
    if not workers:
        body.update(status="error", reason="no worker is alive: start some with `make worker`")
        return jsonify(body), 503
    return jsonify(body)


@bp.get("/metrics")
def metrics() -> Response:
    """Report job outcomes, queue depths, live workers, price-cache hits and API latency in Prometheus's text format."""
    redis = current_app.redis
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(JOB_STATS_KEY)
    pipe.hgetall(LATENCY_KEY)
    pipe.hgetall(PRICE_STATS_KEY)
    jobs, latency, prices = ({k.decode(): float(v) for k, v in h.items()} for h in pipe.execute())
    workers = Worker.all(connection=redis)
    lines = [
        "# HELP trends_jobs_total Jobs that ended, by queue and outcome.",
        "# TYPE trends_jobs_total counter",
    ]
    for field, value in sorted(jobs.items()):
        queue, outcome = field.rsplit(":", 1)
        lines.append(f'trends_jobs_total{{queue="{queue}",outcome="{outcome}"}} {value:g}')
    lines += ["# HELP trends_queue_depth Jobs waiting in each queue.", "# TYPE trends_queue_depth gauge"]
    lines += ["# HELP trends_oldest_queued_job_age_seconds Age of the oldest waiting job.",
              "# TYPE trends_oldest_queued_job_age_seconds gauge"]
    for queue in current_app.queues:
        report = queue_report(queue)
        lines.append(f'trends_queue_depth{{queue="{queue.name}"}} {report["depth"]}')
        lines.append(f'trends_oldest_queued_job_age_seconds{{queue="{queue.name}"}} {report["oldest_age_seconds"]}')
    lines += ["# HELP trends_workers Live workers, by host.", "# TYPE trends_workers gauge"]
    for host, count in sorted(Counter(worker.hostname for worker in workers).items()):
        lines.append(f'trends_workers{{host="{host}"}} {count}')
    misses = prices.get("misses", 0)
    lines += ["# HELP trends_price_cache_total Price cache lookups by result.", "# TYPE trends_price_cache_total counter",
              f'trends_price_cache_total{{result="hit"}} {prices.get("lookups", 0) - misses:g}',
              f'trends_price_cache_total{{result="miss"}} {misses:g}']
    lines += _latency_lines(latency)
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


def _latency_lines(latency: dict[str, float]) -> list[str]:
    lines = ["# HELP trends_http_request_duration_seconds Time to answer API requests.",
             "# TYPE trends_http_request_duration_seconds histogram"]
    endpoints = sorted({field.rsplit(":", 1)[0] for field in latency})
    for endpoint in endpoints:
        cumulative = 0.0
        for index, bound in enumerate(LATENCY_BUCKETS):
            cumulative += latency.get(f"{endpoint}:{index}", 0)
            lines.append(f'trends_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} {cumulative:g}')
        count = latency.get(f"{endpoint}:count", 0)
        lines.append(f'trends_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="+Inf"}} {count:g}')
        lines.append(f'trends_http_request_duration_seconds_sum{{endpoint="{endpoint}"}} {latency.get(f"{endpoint}:sum", 0):g}')
        lines.append(f'trends_http_request_duration_seconds_count{{endpoint="{endpoint}"}} {count:g}')
    return lines


def record_latency(app: Flask) -> None:
    """Time every API request into a histogram shared by all web processes (one pipelined write, after the answer)."""

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        if request.blueprint == "api" and "started" in g:
            elapsed = time.perf_counter() - g.started
            bucket = next((i for i, bound in enumerate(LATENCY_BUCKETS) if elapsed <= bound), None)
            endpoint = request.endpoint.split(".", 1)[1]
            redis = current_app.redis
            # Written once the answer has gone out, so the client does not wait on its own statistic.
            response.call_on_close(lambda: _observe(redis, endpoint, bucket, elapsed))
        return response


def _observe(redis: Redis, endpoint: str, bucket: int | None, elapsed: float) -> None:
    """Add one request's latency to the shared histogram; a failure costs the statistic, never the answer."""
    try:
        pipe = redis.pipeline(transaction=False)
        if bucket is not None:
            pipe.hincrby(LATENCY_KEY, f"{endpoint}:{bucket}", 1)
        pipe.hincrby(LATENCY_KEY, f"{endpoint}:count", 1)
        pipe.hincrbyfloat(LATENCY_KEY, f"{endpoint}:sum", elapsed)
        pipe.execute()
    except RedisError:
        pass


def mount_dashboard(app: Flask, limiter: Limiter) -> None:
    """rq-dashboard at /rq, only with DASHBOARD_PASSWORD set: it can delete and requeue jobs."""
    password = app.config["DASHBOARD_PASSWORD"]
    if not password:
        return  # /rq stays a 404: never an open dashboard
    rq_dashboard.web.config.serializer = JSONSerializer  # our jobs are JSON; never unpickle
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["REDIS_URL"]
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    guard_dashboard(app, limiter)
    user = app.config["DASHBOARD_USER"]

    @app.before_request
    def require_dashboard_login() -> Response | None:
        if request.blueprint != "rq_dashboard":
            return None
        auth = request.authorization
        if auth and auth.type == "basic" and _same(auth.username, user) and _same(auth.password, password):
            return None
        return Response("Log in to see the RQ dashboard.\n", 401, {"WWW-Authenticate": 'Basic realm="rq-dashboard"'})


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())

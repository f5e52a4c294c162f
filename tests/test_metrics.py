"""/metrics through prometheus_client: the fleet's counters read from Redis, API latency kept in the web processes."""
import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from jobs.records import JOB_STATS_KEY, OUTCOMES, PRICE_STATS_KEY, YAHOO_STATS_KEY
from tests.conftest import WebServer, http_status, wait_until

LATENCY = "trends_http_request_duration_seconds"


def samples(text: str) -> dict[tuple, float]:
    """Every sample of an exposition, parsed by prometheus_client: (name, sorted labels) → value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def value(exposition: dict[tuple, float], name: str, **labels) -> float | None:
    return exposition.get((name, tuple(sorted(labels.items()))))


def add_worker(redis, name: str, **fields) -> None:
    """A worker's RQ hash and registration, as a live worker of any version leaves them."""
    redis.sadd("rq:workers", f"rq:worker:{name}")
    redis.hset(f"rq:worker:{name}", mapping={"name": name, "state": "idle", **fields})


def requests_counted(exposition: dict[tuple, float], endpoint: str) -> float:
    return value(exposition, f"{LATENCY}_count", endpoint=endpoint) or 0


def test_exposition_reports_the_counters_the_workers_keep_in_redis(client, redis_client):
    redis_client.hincrby(JOB_STATS_KEY, "trends:ok", 7)
    redis_client.hincrby(JOB_STATS_KEY, "trends-bulk:source_unavailable", 2)
    redis_client.hincrby(JOB_STATS_KEY, "trends:failed", 4)  # a name from before the outcomes: exported as it is
    redis_client.hincrby(YAHOO_STATS_KEY, "eth0:requests:200", 40)
    redis_client.hincrby(YAHOO_STATS_KEY, "eth0:requests:429", 3)
    redis_client.hincrby(YAHOO_STATS_KEY, "10.0.0.7:requests:error", 1)
    redis_client.hincrby(YAHOO_STATS_KEY, "eth0:waits", 5)
    redis_client.hincrbyfloat(YAHOO_STATS_KEY, "eth0:wait_seconds", 2.5)
    redis_client.hincrby(YAHOO_STATS_KEY, "eth0:cooldowns", 1)
    redis_client.hincrby(YAHOO_STATS_KEY, "eth0:deferrals", 6)
    redis_client.hset(PRICE_STATS_KEY, mapping={"lookups": 10, "misses": 4})
    for i in range(3):
        add_worker(redis_client, f"w{i}", hostname="node1", trends_source="yahoo", trends_version="0.7.0")
    add_worker(redis_client, "old", hostname="node2")  # a worker from before the trends_* fields
    client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT"]})  # one job per symbol, nobody to run them

    metrics = scrape(client)
    assert value(metrics, "trends_symbols_total", queue="trends", outcome="ok") == 7
    assert value(metrics, "trends_symbols_total", queue="trends-bulk", outcome="source_unavailable") == 2
    assert value(metrics, "trends_symbols_total", queue="trends", outcome="failed") == 4
    assert value(metrics, "trends_yahoo_requests_total", egress="eth0", status="200") == 40
    assert value(metrics, "trends_yahoo_requests_total", egress="eth0", status="429") == 3
    assert value(metrics, "trends_yahoo_requests_total", egress="10.0.0.7", status="error") == 1
    assert value(metrics, "trends_yahoo_governor_waits_total", egress="eth0") == 5
    assert value(metrics, "trends_yahoo_governor_wait_seconds_total", egress="eth0") == 2.5
    assert value(metrics, "trends_yahoo_cooldowns_total", egress="eth0") == 1
    assert value(metrics, "trends_yahoo_deferrals_total", egress="eth0") == 6
    assert value(metrics, "trends_price_cache_total", result="hit") == 6
    assert value(metrics, "trends_price_cache_total", result="miss") == 4
    assert value(metrics, "trends_queue_depth", queue="trends") == 2
    assert value(metrics, "trends_queue_depth", queue="trends-bulk") == 0
    assert value(metrics, "trends_oldest_queued_job_age_seconds", queue="trends") >= 0
    assert value(metrics, "trends_oldest_queued_job_age_seconds", queue="trends-bulk") == 0
    assert value(metrics, "trends_workers", host="node1", source="yahoo", version="0.7.0") == 3
    assert value(metrics, "trends_workers", host="node2", source="unknown", version="unknown") == 1


def test_every_outcome_of_every_queue_is_exported_before_it_happens(app, client):
    metrics = scrape(client)
    for queue in app.queues:
        for outcome in OUTCOMES:
            assert value(metrics, "trends_symbols_total", queue=queue.name, outcome=outcome) == 0, (queue.name, outcome)
    exposition = client.get("/metrics").get_data(as_text=True)
    families = {family.name: family.type for family in text_string_to_metric_families(exposition)}
    for name in ("trends_symbols", "trends_yahoo_requests", "trends_yahoo_governor_waits", "trends_yahoo_governor_wait_seconds",
                 "trends_yahoo_cooldowns", "trends_yahoo_deferrals", "trends_price_cache"):
        assert families[name] == "counter", name
    for name in ("trends_queue_depth", "trends_oldest_queued_job_age_seconds", "trends_workers"):
        assert families[name] == "gauge", name
    assert families[LATENCY] == "histogram"


def test_label_values_are_escaped(client, redis_client):
    host = 'rack "7" \\ node\nnine'
    add_worker(redis_client, "odd", hostname=host, trends_source="csv", trends_version="0.7.0")
    redis_client.hincrby(YAHOO_STATS_KEY, 'eth"0\\:requests:200', 1)
    metrics = scrape(client)
    assert value(metrics, "trends_workers", host=host, source="csv", version="0.7.0") == 1
    assert value(metrics, "trends_yahoo_requests_total", egress='eth"0\\', status="200") == 1


def test_damaged_or_planted_data_costs_its_own_figures_never_the_scrape(client, redis_client):
    redis_client.hset(JOB_STATS_KEY, mapping={"trends:ok": 3, "trends:error": "many", "no-colon": 1, b"\xff:ok": 1})
    redis_client.hset(YAHOO_STATS_KEY, mapping={"egress-a:requests:200": 2, "nocolon": 5})
    redis_client.set(PRICE_STATS_KEY, "not a hash")
    add_worker(redis_client, "odd", hostname=b"\xffhost", trends_source="yahoo", trends_version=b"\xfe")
    redis_client.sadd("rq:workers", "rq:worker:planted")
    redis_client.set("rq:worker:planted", "not a hash")
    metrics = scrape(client)
    assert value(metrics, "trends_symbols_total", queue="trends", outcome="ok") == 3
    assert value(metrics, "trends_yahoo_requests_total", egress="egress-a", status="200") == 2
    assert client.get("/healthz").json["sources"] == {"yahoo": 1}


def test_api_latency_is_counted_in_the_process_without_writing_redis(client, redis_client):
    before = scrape(client)
    calls_before = hash_increments(redis_client)
    for _ in range(5):
        assert client.get("/api/analyses/no-such-analysis").status_code == 404
    for _ in range(3):
        assert client.post("/get_trends", json={"symbols": "not a list"}).status_code == 400
    after = scrape(client)
    assert requests_counted(after, "get_analysis") - requests_counted(before, "get_analysis") == 5
    assert requests_counted(after, "get_trends") - requests_counted(before, "get_trends") == 3
    inf = value(after, f"{LATENCY}_bucket", endpoint="get_analysis", le="+Inf")
    assert inf == requests_counted(after, "get_analysis")
    assert value(after, f"{LATENCY}_bucket", endpoint="get_analysis", le="30.0") is not None, "today's buckets"
    assert hash_increments(redis_client) == calls_before, "no HINCRBY/HINCRBYFLOAT per request"
    assert not redis_client.exists("trends:stats:http")


def hash_increments(redis) -> int:
    stats = redis.info("commandstats")
    return sum(stats.get(f"cmdstat_{command}", {}).get("calls", 0) for command in ("hincrby", "hincrbyfloat"))


def test_gunicorn_web_processes_report_the_sum_of_their_latency_counts(redis_server, redis_client, tmp_path):
    server = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2)
    try:
        wait_until(lambda: len(children(server.process.pid)) == 2, what="two web processes")
        processes = children(server.process.pid)
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while len(serving(processes)) < 2:  # until both processes answered some (the kernel picks one per connection)
                assert sent < 400, "one web process took every connection, or they keep no metrics files"
                statuses = list(pool.map(lambda _: http_status(f"{server.url}/api/analyses/nope"), range(40)))
                assert statuses == [404] * 40
                sent += 40
        with ThreadPoolExecutor(8) as pool:
            scrapes = list(pool.map(lambda _: gunicorn_scrape(server.url), range(16)))
        assert {requests_counted(metrics, "get_analysis") for metrics in scrapes} == {sent}
    finally:
        server.stop()


def gunicorn_scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return samples(response.read().decode())


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def serving(pids: list[int]) -> list[int]:
    """The processes that keep a prometheus_client histogram file of their own: those that timed an API request."""
    def maps_own_histogram(pid: int) -> bool:
        with open(f"/proc/{pid}/maps") as maps:
            return re.search(rf"/histogram_{pid}\.db$", maps.read(), re.MULTILINE) is not None

    return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and maps_own_histogram(pid)]

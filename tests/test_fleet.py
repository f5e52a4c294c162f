"""The fleet on one machine: dashboard auth, health, metrics, queue priority, graceful stop."""
import base64
import json
import os
import pickle

import pytest
from flask import jsonify
from prometheus_client.parser import text_string_to_metric_families

from jobs.records import VERSION
from tests.conftest import wait_until
from webapp import create_app


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def synthetic_worker(redis_server, redis_client, start_workers):
    """One worker on synthetic prices that take 20 ms each to 'fetch'."""
    return start_workers(redis_server.url, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=20)


def test_dashboard_is_404_without_a_password_configured(client):
    assert client.get("/rq/").status_code == 404


def test_dashboard_needs_the_configured_credentials(redis_server, redis_client, workers):
    app = create_app({"REDIS_URL": redis_server.url, "DASHBOARD_USER": "ops", "DASHBOARD_PASSWORD": "s3cret"})
    client = app.test_client()
    refused = client.get("/rq/")
    assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    assert client.get("/rq/", headers=basic("ops", "wrong")).status_code == 401
    assert client.get("/rq/", headers=basic("ops", "s3cret")).status_code == 200
    listed = client.get("/rq/0/data/workers.json", headers=basic("ops", "s3cret")).json
    assert {worker["name"] for worker in listed["workers"]} == workers.names()
    assert client.get("/", headers=basic("ops", "s3cret")).status_code == 200


def test_healthz_is_503_without_workers_and_200_with_one(client, redis_server, start_workers):
    down = client.get("/healthz")
    assert down.status_code == 503 and "no worker" in down.json["reason"]
    assert down.json["redis"] is True
    start_workers(redis_server.url, PRICE_SOURCE="synthetic")
    up = client.get("/healthz")
    assert up.status_code == 200 and up.json["workers"] == 1
    assert list(up.json["hosts"].values()) == [1]
    assert up.json["sources"] == {"synthetic": 1} and up.json["versions"] == {VERSION: 1}
    assert up.json["queues"]["trends"] == {"depth": 0, "oldest_age_seconds": 0.0}


def test_livez_is_200_without_workers_so_load_balancers_keep_the_web_node(client):
    response = client.get("/livez")
    assert response.status_code == 200 and response.json == {"status": "ok", "redis": True}
    assert client.get("/healthz").status_code == 503, "operators still see that no worker is alive"


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_health_is_503_when_redis_is_unreachable(path):
    app = create_app({"REDIS_URL": "redis://127.0.0.1:1/0"})
    response = app.test_client().get(path)
    assert response.status_code == 503 and response.json["redis"] is False


def test_metrics_count_jobs_queues_workers_and_latency(client, synthetic_worker):
    client.post("/get_trends", json={"symbols": ["AAPL", "NOPE"]}).close()  # the server closes it once sent
    client.post("/api/analyses", json={"symbols": [f"Q{i}" for i in range(30)]}).close()  # bulk; may still be queued
    text = client.get("/metrics").get_data(as_text=True)
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert metrics[("trends_symbols_total", (("outcome", "ok"), ("queue", "trends")))] == 1
    assert metrics[("trends_symbols_total", (("outcome", "unknown_symbol"), ("queue", "trends")))] == 1, "NOPE failed"
    assert ("trends_queue_depth", (("queue", "trends-bulk"),)) in metrics
    workers = [labels for (name, labels), count in metrics.items() if name == "trends_workers" and count == 1]
    assert [dict(labels)["source"] for labels in workers] == ["synthetic"]
    assert metrics[("trends_http_request_duration_seconds_count", (("endpoint", "get_trends"),))] >= 1
    assert metrics[("trends_http_request_duration_seconds_bucket", (("endpoint", "get_trends"), ("le", "+Inf")))] >= 1


def test_a_one_symbol_request_is_not_starved_by_a_bulk_batch(redis_server, redis_client, synthetic_worker):
    app = create_app({"REDIS_URL": redis_server.url, "MAX_SYMBOLS": 1000})
    client = app.test_client()
    bulk = client.post("/api/analyses", json={"symbols": [f"B{i}" for i in range(300)]})  # ~6 s of work
    assert bulk.status_code == 202
    wait_until(lambda: client.get(bulk.json["status_url"]).json["done"] > 0, what="the bulk batch to start")
    single = client.post("/get_trends", json={"symbols": ["AAPL"]}).json
    assert single["status"] == "success"
    assert app.bulk_queue.count > 100, "the one symbol was answered while most of the bulk batch still waited"


def test_sigterm_lets_the_running_job_finish(client, redis_server, redis_client, start_workers):
    worker = start_workers(redis_server.url, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=2000)
    url = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json["status_url"]
    wait_until(lambda: client.get(url).json["state"] == "running", what="the job to start")
    assert worker.stop() == 0
    body = client.get(url).json
    assert body["state"] == "finished", body
    assert worker.names() == set(), "the worker deregistered"


class _Touch:
    """Unpickling this runs `touch path`: what a pickle planted in Redis could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_the_dashboard_never_unpickles_a_planted_job(redis_server, redis_client, tmp_path):
    app = create_app({"REDIS_URL": redis_server.url, "DASHBOARD_USER": "ops", "DASHBOARD_PASSWORD": "s3cret"})
    client = app.test_client()
    marker = tmp_path / "pwned"
    client.post("/api/analyses", json={"symbols": ["AAPL"]})
    job_key = next(iter(redis_client.keys("rq:job:*")))
    redis_client.hset(job_key, mapping={"meta": pickle.dumps(_Touch(marker)), "result": pickle.dumps(_Touch(marker))})
    job_id = job_key.decode().removeprefix("rq:job:")
    for path in (f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json", "/rq/0/data/jobs/trends/queued/8/asc/1.json"):
        client.get(path, headers=basic("ops", "s3cret"))
    assert not marker.exists(), "a planted pickle was unpickled"


def test_answers_encode_keys_that_are_not_text_as_flask_does(app):
    """/healthz counts workers by host; a worker hash re-created without one has host None."""
    with app.app_context():
        assert json.loads(jsonify({None: 1, 2: "b"}).get_data()) == {"null": 1, "2": "b"}

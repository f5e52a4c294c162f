"""The async analysis API: 202 + Location, states and counts, 404 for unknown or expired ids."""
import time

import pytest

from tests.conftest import wait_until
from webapp import create_app


def follow(client, url, timeout=15):
    """Poll an analysis until it ends; return every state seen and the final body."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json
        seen.append(body["state"])
        if body["state"] in ("finished", "partial", "failed"):
            return seen, body
        time.sleep(0.05)
    raise AssertionError(f"analysis did not end; states seen: {seen}")


def test_create_answers_202_at_once_with_a_location(client, redis_client):
    response = client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT"]})
    assert response.status_code == 202
    assert response.headers["Location"] == response.json["status_url"] == f"/api/analyses/{response.json['id']}"
    body = client.get(response.headers["Location"]).json  # no workers: nothing can have started
    assert body["state"] == "queued" and body["done"] == 0 and body["total"] == 2
    assert [(s["symbol"], s["state"]) for s in body["symbols"]] == [("AAPL", "queued"), ("MSFT", "queued")]


def test_an_analysis_runs_to_partial_with_per_symbol_results(client, workers, prices):
    created = client.post("/api/analyses", json={"symbols": ["AAPL", "NOPE", "MSFT"], "horizon": 2}).json
    seen, body = follow(client, created["status_url"])
    assert body["state"] == "partial" and body["done"] == body["total"] == 3
    states = {s["symbol"]: s["state"] for s in body["symbols"]}
    assert states == {"AAPL": "done", "NOPE": "error", "MSFT": "done"}
    aapl = body["symbols"][0]["result"]
    trends = client.post("/get_trends", json={"symbols": ["AAPL"], "horizon": 2}).json["results"][0]
    assert aapl == trends, "the async API and /get_trends give the same result object"
    assert "no price file" in body["symbols"][1]["result"]["error"]


def test_progress_only_moves_forward(client, workers, prices):
    created = client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT", "BRK-B"]}).json
    seen, body = follow(client, created["status_url"])
    order = ["queued", "running", "finished"]
    assert body["state"] == "finished" and body["done"] == 3
    assert [order.index(state) for state in seen] == sorted(order.index(state) for state in seen)


def test_all_symbols_failing_is_failed(client, workers, prices):
    created = client.post("/api/analyses", json={"symbols": ["NOPE", "NADA"]}).json
    _, body = follow(client, created["status_url"])
    assert body["state"] == "failed"


def test_unknown_id_is_404_with_a_message(client):
    response = client.get("/api/analyses/0123456789abcdef")
    assert response.status_code == 404
    assert response.json["status"] == "error" and "expired" in response.json["message"]


def test_another_web_process_answers_for_the_same_analysis(redis_server, redis_client):
    first, second = (create_app({"REDIS_URL": redis_server.url}).test_client() for _ in range(2))
    url = first.post("/api/analyses", json={"symbols": ["AAPL"]}).json["status_url"]
    assert second.get(url).json["total"] == 1


@pytest.mark.parametrize("body", [{"symbols": []}, {"symbols": ["A B"]}, {"window": 3}])
def test_bad_bodies_are_refused_like_get_trends(client, app, body):
    response = client.post("/api/analyses", json=body)
    assert response.status_code == 400 and response.json["status"] == "error"
    assert app.interactive_queue.count == 0

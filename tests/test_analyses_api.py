"""The async analysis API: 202 + Location, states and counts, 404 for unknown or expired ids."""
import time

import pytest

from jobs.fair import waiting
from jobs.records import OPEN_ANALYSES_KEY, record_key
from tests.conftest import analysis_jobs, wait_until
from webapp import create_app
from webapp.analyses import keep_analyses, keep_once, write_cursor


def test_create_answers_202_at_once_with_a_location(client, redis_client):
    response = client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT"]})
    assert response.status_code == 202
    assert response.headers["Location"] == response.json["status_url"] == f"/api/analyses/{response.json['id']}"
    body = client.get(response.headers["Location"]).json  # no workers: nothing can have started
    assert body["state"] == "queued" and body["done"] == 0 and body["total"] == 2
    assert [(s["symbol"], s["state"]) for s in body["symbols"]] == [("AAPL", "queued"), ("MSFT", "queued")]


def test_an_analysis_runs_to_partial_with_per_symbol_results(app, client, csv_jobs, prices):
    created = client.post("/api/analyses", json={"symbols": ["AAPL", "NOPE", "MSFT"], "horizon": 2}).json
    csv_jobs(app)
    body = client.get(created["status_url"]).json
    assert body["state"] == "partial" and body["done"] == body["total"] == 3
    states = {s["symbol"]: s["state"] for s in body["symbols"]}
    assert states == {"AAPL": "done", "NOPE": "error", "MSFT": "done"}
    aapl = body["symbols"][0]["result"]
    trends = client.post("/get_trends", json={"symbols": ["AAPL"], "horizon": 2}).json["results"][0]
    assert aapl == trends, "the async API and /get_trends give the same result object"
    assert "no price file" in body["symbols"][1]["result"]["error"]


def test_progress_only_moves_forward(app, client, csv_jobs, prices):
    created = client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT", "BRK-B"]}).json
    seen = [client.get(created["status_url"]).json]
    for _ in range(3):  # one job at a time
        csv_jobs(app, max_jobs=1)
        seen.append(client.get(created["status_url"]).json)
    assert [(body["state"], body["done"]) for body in seen] == [("queued", 0), ("running", 1), ("running", 2), ("finished", 3)]


def test_a_poll_with_the_last_cursor_carries_only_the_results_new_since(app, client, csv_jobs, prices):
    created = client.post("/api/analyses", json={"symbols": ["AAPL", "NOPE", "MSFT"]}).json
    cursor, carried = "", []
    for _ in range(3):  # one job at a time
        csv_jobs(app, max_jobs=1)
        body = client.get(created["status_url"], query_string={"since": cursor}).json
        carried.append([entry["symbol"] for entry in body["symbols"] if "result" in entry])
        cursor = body["cursor"]
    assert carried == [["AAPL"], ["NOPE"], ["MSFT"]], "each result once, in the poll after it ended"
    assert [entry["state"] for entry in body["symbols"]] == ["done", "error", "done"], "states stay whole"
    assert body["state"] == "partial" and body["done"] == 3
    again = client.get(created["status_url"], query_string={"since": cursor}).json
    assert not any("result" in entry for entry in again["symbols"]) and again["cursor"] == cursor
    whole = client.get(created["status_url"]).json
    assert all("result" in entry for entry in whole["symbols"]), "without a cursor, everything"


def test_a_cursor_that_claims_a_symbol_not_answered_yet_is_a_400(client):
    created = client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT"]}).json
    forged = write_cursor([0, 1])  # well formed, but neither symbol has ended
    response = client.get(created["status_url"], query_string={"since": forged})
    assert response.status_code == 400 and "since must be the cursor" in response.json["message"]


@pytest.mark.parametrize("since", ["not a cursor!", "A" * 40, "=="])
def test_a_cursor_this_analysis_did_not_give_is_a_400(client, since):
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    response = client.get(created["status_url"], query_string={"since": since})
    assert response.status_code == 400 and "since must be the cursor" in response.json["message"]


def test_a_cursor_with_bits_past_the_analysis_symbols_is_a_400_also_once_it_ended(app, client, csv_jobs, prices):
    created = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    csv_jobs(app)
    assert client.get(created["status_url"]).json["state"] == "finished"
    response = client.get(created["status_url"], query_string={"since": "_w"})  # bits 0-7 of a one-symbol analysis
    assert response.status_code == 400 and "since must be the cursor" in response.json["message"]


def test_the_range_level_is_a_request_option_with_its_own_job(app, client, csv_jobs, prices):
    usual = client.post("/api/analyses", json={"symbols": ["AAPL"]}).json
    wider = client.post("/api/analyses", json={"symbols": ["AAPL"], "level": 0.9}).json
    csv_jobs(app)
    results = [client.get(created["status_url"]).json for created in (usual, wider)]
    assert [body["level"] for body in results] == [0.8, 0.9]
    first, second = (body["symbols"][0]["result"] for body in results)
    assert first["interval"]["level"] == 0.8 and second["interval"]["level"] == 0.9
    width = [result["prediction_upper"][0] - result["prediction_lower"][0] for result in (first, second)]
    assert width[1] > width[0]
    assert analysis_jobs(app.redis, usual["id"])[0].id != analysis_jobs(app.redis, wider["id"])[0].id


def test_all_symbols_failing_is_failed(app, client, csv_jobs, prices):
    created = client.post("/api/analyses", json={"symbols": ["NOPE", "NADA"]}).json
    csv_jobs(app)
    assert client.get(created["status_url"]).json["state"] == "failed"


def test_unknown_id_is_404_with_a_message(client):
    response = client.get("/api/analyses/0123456789abcdef")
    assert response.status_code == 404
    assert response.json["status"] == "error" and "expired" in response.json["message"]


def test_an_open_analysis_outlives_result_ttl_then_expires_result_ttl_after_its_last_answer(redis_server, redis_client,
                                                                                            run_jobs):
    app = create_app({"REDIS_URL": redis_server.url, "RESULT_TTL": 3, "RESULT_CACHE_TTL": 1})
    client = app.test_client()
    created = client.post("/api/analyses", json={"symbols": ["EARLY", "LATE"]}).json
    run_jobs(app, max_jobs=1)  # EARLY is answered, LATE waits in the queue
    for _ in range(5):  # twice RESULT_TTL, with the keeper running as often as the web app runs it (every second)
        time.sleep(1)
        keep_analyses(app.redis, 3)
    body = client.get(created["status_url"]).json
    assert [s["state"] for s in body["symbols"]] == ["done", "queued"]
    assert len(body["symbols"][0]["result"]["predictions"]) == 5, "the early result is kept while the analysis is open"
    run_jobs(app)
    assert keep_analyses(app.redis, 3) == 0 and redis_client.zscore(OPEN_ANALYSES_KEY, created["id"]) is None
    assert client.get(created["status_url"]).json["state"] == "finished"
    assert 0 < redis_client.ttl(record_key(created["id"])) <= 3
    wait_until(lambda: client.get(created["status_url"]).status_code == 404, timeout=10, what="the record to expire")


def test_an_accepted_analysis_stays_readable_while_redis_is_full(redis_server, redis_client):
    """maxmemory reached (noeviction): the keeper's lock is refused, yet it still keeps every open analysis alive."""
    app = create_app({"REDIS_URL": redis_server.url, "RESULT_TTL": 60, "RESULT_CACHE_TTL": 30})
    client = app.test_client()
    created = client.post("/api/analyses", json={"symbols": ["WAITS"]}).json  # no worker: it stays queued
    redis_client.expire(record_key(created["id"]), 2)  # about to expire, as when the keeper last ran long ago
    redis_client.config_set("maxmemory", 1)  # every write that needs memory is refused
    try:
        assert keep_once(app.redis, 60, 1), "a refused lock does not stop the keeper"
        assert redis_client.ttl(record_key(created["id"])) > 2, "the record's life was extended"
        answer = client.get(created["status_url"])
        assert answer.status_code == 200 and answer.json["state"] == "queued"
    finally:
        redis_client.config_set("maxmemory", 0)


@pytest.mark.parametrize("analysis_id", ["x", "0123456789abcdef0123456789abcdeg", "a" * 32 + ":jobs", "../etc"])
def test_ids_that_are_not_ours_are_404_without_touching_redis(client, analysis_id):
    response = client.get(f"/api/analyses/{analysis_id}")
    assert response.status_code == 404 and response.json["status"] == "error"


def test_another_web_process_answers_for_the_same_analysis(redis_server, redis_client):
    first, second = (create_app({"REDIS_URL": redis_server.url}).test_client() for _ in range(2))
    url = first.post("/api/analyses", json={"symbols": ["AAPL"]}).json["status_url"]
    assert second.get(url).json["total"] == 1


@pytest.mark.parametrize("body", [{"symbols": []}, {"symbols": ["A B"]}, {"window": 3}])
def test_bad_bodies_are_refused_like_get_trends(client, app, body):
    response = client.post("/api/analyses", json=body)
    assert response.status_code == 400 and response.json["status"] == "error"
    assert waiting(app.redis, app.interactive_queue)[0] == 0

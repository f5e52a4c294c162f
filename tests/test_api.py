"""POST /get_trends end to end: real Redis, real worker processes, CSV prices the tests write."""
import base64
import datetime as dt
import json
import re
import socket
import zlib

import numpy as np
import orjson
import pandas as pd
import pytest

from jobs import tasks
from jobs.sources import CsvSource
from tests.conftest import RedisServer, answer_while_working, weekdays, write_prices
from webapp import create_app
from webapp.analyses import ENDED_STATES, get_trends
from webapp.shared_jobs import READ_BATCH, STORED_JSON
from webapp.validation import MAX_HORIZON, MAX_WINDOW, METHODS, PAGE_METHOD, TICKER_PATTERN, TrendsRequest


def test_several_symbols_get_correct_trends_and_predictions(client, workers, prices):
    response = client.post("/get_trends", json={"symbols": ["aapl", "MSFT", "brk-b", "AAPL"], "window": 10, "horizon": 3})
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "success"
    assert body["message"] == "Trends and predictions calculated successfully"
    assert [r["symbol"] for r in body["results"]] == ["AAPL", "MSFT", "BRK-B"]
    for result in body["results"]:
        closes = pd.Series(prices[result["symbol"]])
        expected_trend = closes.rolling(10).mean().dropna().to_numpy()
        slope, intercept = np.polyfit(np.arange(len(closes)), closes, 1)
        expected_predictions = intercept + slope * np.arange(len(closes), len(closes) + 3)
        assert np.allclose(result["trend"], expected_trend, atol=1e-5)
        assert np.allclose(result["predictions"], expected_predictions, atol=1e-5)
        assert result["source"] == "csv"
        assert result["last_close"] == pytest.approx(closes.iloc[-1])
        assert len(result["dates"]) == len(result["closes"]) == 252
        last_day = dt.date.fromisoformat(result["dates"][-1])
        assert [dt.date.fromisoformat(d) > last_day for d in result["prediction_dates"]] == [True] * 3


def test_unknown_symbol_is_reported_and_others_succeed(app, csv_jobs, prices):
    body = answer_while_working(app, csv_jobs, {"symbols": ["AAPL", "NOPE", "MSFT"]})
    assert body["status"] == "partial"
    assert "NOPE" in body["message"]
    by_symbol = {r["symbol"]: r for r in body["results"]}
    assert "no price file" in by_symbol["NOPE"]["error"]
    assert "error" not in by_symbol["AAPL"] and "error" not in by_symbol["MSFT"]
    assert len(by_symbol["AAPL"]["predictions"]) == 5


def test_status_is_error_when_no_symbol_succeeds(app, csv_jobs, prices):
    body = answer_while_working(app, csv_jobs, {"symbols": ["NOPE", "NADA"]})
    assert body["status"] == "error"
    assert all("error" in r for r in body["results"])


def test_a_symbol_with_fewer_closes_than_the_window_gets_its_own_error(app, csv_jobs, prices, price_dir):
    write_prices(price_dir, "NEW", weekdays("2025-12-01", 5), [1.0, 2.0, 3.0, 4.0, 5.0])
    body = answer_while_working(app, csv_jobs, {"symbols": ["NEW", "AAPL"], "window": 20})
    assert body["status"] == "partial"
    assert "only 5 daily closes" in body["results"][0]["error"]


def test_a_job_that_crashes_is_reported_in_words_without_a_traceback(app, csv_jobs, prices):
    """A bug in a job (here: a bad argument that validation would have stopped) still answers."""
    unchecked = TrendsRequest.model_construct(symbols=["AAPL"], window="x", horizon=5, method="trend")
    body = answer_while_working(app, csv_jobs,
                                ask=lambda: get_trends(app.redis, app.interactive_queue, "", unchecked, app.config))
    error = body["results"][0]["error"]
    assert "failed unexpectedly (TypeError)" in error and "Traceback" not in error


def test_symbols_no_worker_answers_in_time_get_a_timeout_error(redis_server, redis_client):
    quick = {"TRENDS_TIMEOUT": 6, "JOB_TIMEOUT": 1, "WORKER_LOST_AFTER": 3, "MAINTENANCE_INTERVAL": 1}
    app = create_app({"REDIS_URL": redis_server.url, **quick})
    body = app.test_client().post("/get_trends", json={"symbols": ["AAPL", "MSFT"]}).json
    assert body["status"] == "error"
    assert all("no worker took this symbol within 6 s" in r["error"] for r in body["results"])


def test_a_request_out_of_time_still_gives_every_result_that_is_there(redis_server, redis_client, run_jobs):
    # Results are read a hundred pending symbols at a time; out of time, those past the first hundred count too.
    quick = {"TRENDS_TIMEOUT": 6, "JOB_TIMEOUT": 1, "WORKER_LOST_AFTER": 3, "MAINTENANCE_INTERVAL": 1}
    size = READ_BATCH + 50
    app = create_app({"REDIS_URL": redis_server.url, "MAX_SYMBOLS": size, "BULK_THRESHOLD": size, **quick})
    answered = [f"DONE{n}" for n in range(50)]
    assert answer_while_working(app, run_jobs, {"symbols": answered})["status"] == "success"
    waiting = [f"WAIT{n}" for n in range(READ_BATCH)]  # a whole batch that no worker runs from here on
    body = app.test_client().post("/get_trends", json={"symbols": waiting + answered}).json
    assert body["status"] == "partial"
    assert [r["symbol"] for r in body["results"]] == waiting + answered
    assert all("no worker took this symbol within 6 s" in r["error"] for r in body["results"][:READ_BATCH])
    assert all("error" not in r and len(r["closes"]) == 252 for r in body["results"][READ_BATCH:])


def test_jobs_and_results_in_redis_are_json_not_pickle(client, workers, prices, redis_client):
    client.post("/get_trends", json={"symbols": ["AAPL", "NOPE"]})
    job_keys = redis_client.keys("rq:job:*")
    assert len(job_keys) == 2
    for key in job_keys:
        job = redis_client.hgetall(key)
        func, _, args, kwargs = json.loads(zlib.decompress(job[b"data"]))  # RQ zlib-compresses job data
        # The default level is not sent: a worker from before 0.8.0 takes four arguments.
        assert func == "jobs.tasks.analyze_symbol" and args in (["AAPL", 20, 5, "trend"], ["NOPE", 20, 5, "trend"])
        if args[0] == "NOPE":  # the worker's words for its failure, as JSON
            assert "no price file" in json.loads(job[b"meta"])["error"]
    entries = [entry for key in redis_client.keys("rq:results:*") for _, entry in redis_client.xrange(key)]
    returned = [json.loads(base64.b64decode(entry[b"return_value"])) for entry in entries if b"return_value" in entry]
    assert [result["symbol"] for result in returned] == ["AAPL"], "NOPE failed: its job has no return value"


def test_workers_are_named_after_their_host(workers):
    assert len(workers.names()) == 2
    assert all(name.startswith(socket.gethostname() + ".") for name in workers.names())


def test_redis_down_gives_503_with_a_clear_message(tmp_path):
    server = RedisServer(str(tmp_path))
    server.start()
    app = create_app({"REDIS_URL": server.url})
    server.stop()
    response = app.test_client().post("/get_trends", json={"symbols": ["AAPL"]})
    assert response.status_code == 503
    assert response.json == {"status": "error", "message": "The job queue (Redis) is unreachable; try again shortly"}


def test_the_anchored_method_is_echoed_and_starts_from_the_last_close(app, csv_jobs, prices):
    result = answer_while_working(app, csv_jobs, {"symbols": ["MSFT"], "method": "anchored", "horizon": 3})["results"][0]
    closes = np.array(prices["MSFT"])
    slope = np.polyfit(np.arange(len(closes)), closes, 1)[0]
    assert result["method"] == "anchored"
    assert np.allclose(result["predictions"], closes[-1] + slope * np.arange(1, 4), atol=1e-5)
    assert all(lo <= p <= hi for lo, p, hi in zip(result["prediction_lower"], result["predictions"], result["prediction_upper"]))
    assert result["backtest"]["origins"] > 100


def test_the_page_takes_its_limits_and_choices_from_the_server(redis_server, redis_client):
    page = create_app({"REDIS_URL": redis_server.url, "MAX_SYMBOLS": 7}).test_client().get("/").text
    assert "up to 7," in page
    assert f'max="{MAX_WINDOW}"' in page and f'max="{MAX_HORIZON}"' in page
    listed = re.findall(r'<option value="(\w+)"', page)
    assert sorted(listed) == sorted(METHODS) and listed[0] == PAGE_METHOD, "every method, the page's default first"
    assert f'data-ticker-pattern="{TICKER_PATTERN}"' in page, "the form checks tickers as the API does"
    assert f'data-ended-states="{" ".join(ENDED_STATES)}"' in page
    assert 'href="/rq/"' not in page, "no dashboard link while the dashboard is off"
    with_dashboard = create_app({"REDIS_URL": redis_server.url, "DASHBOARD_PASSWORD": "secret"}).test_client()
    assert 'href="/rq/"' in with_dashboard.get("/").text


def test_after_the_demo_a_real_source_on_the_same_redis_never_answers_with_the_demos_result(redis_server, run_jobs,
                                                                                          monkeypatch, price_dir, prices):
    """`make demo` then `make run` on one Redis: a symbol's work, job and result belong to the source that asked."""
    demo = create_app({"REDIS_URL": redis_server.url, "PRICE_SOURCE": "synthetic"})
    first = answer_while_working(demo, run_jobs, {"symbols": ["AAPL"]})["results"][0]
    assert first["source"] == "synthetic"
    monkeypatch.setattr(tasks, "_price_source", CsvSource(str(price_dir)))  # the workers of `make run` on csv:DIR
    real = create_app({"REDIS_URL": redis_server.url, "PRICE_SOURCE": f"csv:{price_dir}"})
    second = answer_while_working(real, run_jobs, {"symbols": ["AAPL"]})["results"][0]
    assert second["source"] == "csv" and second["closes"][-1] == round(float(prices["AAPL"][-1]), 6)


def test_after_the_demo_a_real_source_does_not_reopen_the_demos_analysis(redis_server, run_jobs, price_dir):
    """A demo analysis reopened (a link, the page's history) under `make run` is not this deployment's: 404, in words."""
    demo = create_app({"REDIS_URL": redis_server.url, "PRICE_SOURCE": "synthetic"})
    created = demo.test_client().post("/api/analyses", json={"symbols": ["AAPL"]}).json
    run_jobs(demo)
    assert demo.test_client().get(created["status_url"]).json["state"] == "finished"
    real = create_app({"REDIS_URL": redis_server.url, "PRICE_SOURCE": f"csv:{price_dir}"}).test_client()
    reopened = real.get(created["status_url"])
    assert reopened.status_code == 404 and "another price source" in reopened.json["message"]
    assert str(price_dir) not in reopened.json["message"], "no path in an answer"


def test_answers_embed_stored_results_as_stored_and_decode_what_is_not_plain_json():
    stored = b'{"symbol": "AAPL", "closes": [1.5, 2.25]}'
    assert orjson.dumps({"results": [STORED_JSON.loads(stored)]}) == b'{"results":[' + stored + b"]}"
    # RQ's JSONSerializer wrote non-finite numbers as NaN/Infinity, which JSON has not: decoded, written as null.
    assert orjson.dumps(STORED_JSON.loads(b'{"mape": [NaN, Infinity]}')) == b'{"mape":[null,null]}'
    assert STORED_JSON.loads(b"[1]") == [1], "not one JSON object: decoded (and refused there if not JSON)"

"""The web app's defences: admission control, slow clients, the dashboard, security headers, JSON-only errors."""
import base64
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from jobs.fair import staged_queues, waiting
from tests.conftest import WebServer, http_json
from webapp import create_app


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_a_client_is_charged_per_symbol_across_both_submit_endpoints(redis_server, redis_client):
    client = create_app({"REDIS_URL": redis_server.url, "RATE_LIMIT_SYMBOLS": "10/minute"}).test_client()
    assert client.post("/api/analyses", json={"symbols": ["A", "B", "C", "D", "E", "F"]}).status_code == 202
    assert client.post("/get_trends", json={"symbols": ["G", "H", "I", "J", "K"]}).status_code == 429  # 11 > 10
    refused = client.post("/api/analyses", json={"symbols": ["G", "H", "I", "J", "K"]})
    assert refused.status_code == 429 and "symbol budget (10 per 1 minute symbols)" in refused.json["message"]
    assert int(refused.headers["Retry-After"]) > 0
    assert client.post("/api/analyses", json={"symbols": ["G", "H"]}).status_code == 202, "what is left can be used"
    other = client.post("/api/analyses", json={"symbols": ["A"] * 1}, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 202, "another client has its own budget"


def test_budgets_are_shared_by_every_web_process(redis_server, redis_client):
    first, second = (create_app({"REDIS_URL": redis_server.url, "RATE_LIMIT_SYMBOLS": "2/minute"}).test_client()
                     for _ in range(2))
    assert first.post("/api/analyses", json={"symbols": ["A"]}).status_code == 202
    assert second.post("/api/analyses", json={"symbols": ["A"]}).status_code == 202
    assert first.post("/api/analyses", json={"symbols": ["A"]}).status_code == 429


def test_with_default_limits_the_load_scenario_is_served_and_twenty_times_it_is_limited(redis_server, redis_client,
                                                                                          start_workers, tmp_path):
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic")
    web = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2)  # default limits
    try:
        def burst(requests: int, offset: int) -> list[int]:
            def one(n):
                try:
                    body = http_json("POST", web.url + "/get_trends", {"symbols": [f"L{n % 60}{k}" for k in range(5)]})
                    return 200 if body["status"] == "success" else 0
                except OSError as exc:
                    return getattr(exc, "code", 0)
            with ThreadPoolExecutor(48) as pool:
                return list(pool.map(one, range(offset, offset + requests)))

        assert set(burst(48, 0) + burst(48, 48)) == {200}, "48 concurrent 5-symbol requests, twice in a minute"
        assert 429 in burst(48 * 19, 96), "twenty times that from one address is limited"
    finally:
        web.stop()


def test_past_the_backlog_bound_bulk_requests_get_503_and_small_ones_are_still_served(redis_server, redis_client,
                                                                                        start_workers):
    app = create_app({"REDIS_URL": redis_server.url, "MAX_BACKLOG": 200, "RATE_LIMIT_SYMBOLS": "1000000/minute"})
    client = app.test_client()
    statuses = [client.post("/api/analyses", json={"symbols": [f"F{i}-{k}" for k in range(50)]}).status_code
                for i in range(8)]
    assert statuses[:4] == [202] * 4 and set(statuses[4:]) == {503}, statuses  # 200 waiting: 50 more would pass 200
    refused = client.post("/api/analyses", json={"symbols": [f"X{k}" for k in range(30)]})
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert "queue is full (200 symbols waiting" in refused.json["message"]
    start_workers(redis_server.url, 1, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=100)
    assert client.post("/get_trends", json={"symbols": ["SMALL"]}).json["status"] == "success"
    assert app.bulk_queue.count > 150, "the small request was served ahead of the backlog"


def test_a_bulk_request_refused_for_the_backlog_costs_the_client_nothing(redis_server, redis_client):
    client = create_app({"REDIS_URL": redis_server.url, "MAX_BACKLOG": 30, "RATE_LIMIT_SYMBOLS": "60/minute"}).test_client()
    assert client.post("/api/analyses", json={"symbols": [f"A{k}" for k in range(25)]}).status_code == 202
    for _ in range(3):
        assert client.post("/api/analyses", json={"symbols": [f"B{k}" for k in range(25)]}).status_code == 503
    assert client.post("/api/analyses", json={"symbols": [f"C{k}" for k in range(20)]}).status_code == 202


def test_a_full_redis_refuses_new_work_with_503_and_keeps_what_is_queued(redis_server, redis_client):
    client = create_app({"REDIS_URL": redis_server.url}).test_client()
    queued = client.post("/api/analyses", json={"symbols": ["KEEP"]})
    assert queued.status_code == 202
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", used)  # full: noeviction, as `make redis` configures it
    try:
        full = client.post("/api/analyses", json={"symbols": ["NEW1", "NEW2"]})
        assert full.status_code == 503 and "full" in full.json["message"] and full.headers["Retry-After"]
        assert client.get(queued.json["status_url"]).json["state"] == "queued", "nothing queued was dropped"
    finally:
        redis_client.config_set("maxmemory", 0)
    assert redis_client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


def test_slow_and_idle_clients_do_not_starve_the_web_app(redis_server, redis_client, start_workers, tmp_path):
    start_workers(redis_server.url, 1, PRICE_SOURCE="synthetic")
    web = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2, RATE_LIMIT_SYMBOLS="1000000/minute")
    port = int(web.url.rsplit(":", 1)[1])
    slow = []
    try:
        for n in range(200):  # slowloris: headers that never end, and bodies that never arrive
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n" if n % 2 else
                               b"POST /get_trends HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 100\r\n\r\n{")
            slow.append(connection)
        dripping = threading.Event()

        def drip():
            while not dripping.wait(1):
                for connection in slow:
                    connection.sendall(b"X-Slow: 1\r\n" if slow.index(connection) % 2 else b" ")

        threading.Thread(target=drip, daemon=True).start()
        for n in range(10):  # each is answered while the 200 are held open (a starved server never answers: 20 s timeouts)
            assert http_json("GET", web.url + "/livez", timeout=5)["status"] == "ok"
            assert http_json("POST", web.url + "/get_trends", {"symbols": [f"P{n}"]}, timeout=5)["status"] == "success"
            time.sleep(0.2)
        dripping.set()
    finally:
        for connection in slow:
            connection.close()
        web.stop()


@pytest.fixture
def dashboard(redis_server, redis_client):
    return create_app({"REDIS_URL": redis_server.url, "DASHBOARD_USER": "ops", "DASHBOARD_PASSWORD": "s3cret"})


def test_a_clients_queue_is_not_compacted_from_the_dashboard(dashboard, redis_client):
    """RQ's compact empties the list before it pushes the jobs back: a take in between would end the client's turn."""
    client = dashboard.test_client()
    client.post("/api/analyses", json={"symbols": ["AAPL", "MSFT"]})
    staged = staged_queues(redis_client, dashboard.interactive_queue)[0]
    response = client.post(f"/rq/queue/{staged.name}/compact", headers=basic("ops", "s3cret"))
    assert response.status_code == 403 and "is not compacted" in response.json["message"]
    assert staged_queues(redis_client, dashboard.interactive_queue) == [staged] and staged.count == 2


@pytest.mark.parametrize("headers, allowed", [
    ({"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}, True),
    ({}, True),  # not a browser: no ambient credentials to abuse
    ({"Sec-Fetch-Site": "cross-site"}, False),
    ({"Origin": "https://evil.example"}, False),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://sub.localhost"}, False),
])
def test_dashboard_actions_are_refused_from_other_sites(dashboard, redis_client, headers, allowed):
    client = dashboard.test_client()
    client.post("/api/analyses", json={"symbols": ["AAPL"]})
    staged = staged_queues(redis_client, dashboard.interactive_queue)[0]  # where the client's job waits its turn
    response = client.post(f"/rq/queue/{staged.name}/queued/empty", headers={**basic("ops", "s3cret"), **headers})
    assert (response.status_code == 200) is allowed, response.get_data(as_text=True)
    assert (waiting(redis_client, dashboard.interactive_queue)[0] == 0) is allowed


def test_dashboard_requeue_by_get_or_head_is_refused_and_read_only_mode_refuses_actions(redis_server, redis_client,
                                                                                        dashboard):
    client = dashboard.test_client()
    for method in (client.get, client.head):
        wrong = method("/rq/requeue/trends", headers=basic("ops", "s3cret"))
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    read_only = create_app({"REDIS_URL": redis_server.url, "DASHBOARD_PASSWORD": "s3cret", "DASHBOARD_USER": "ops",
                            "DASHBOARD_READ_ONLY": True}).test_client()
    assert read_only.get("/rq/0/data/queues.json", headers=basic("ops", "s3cret")).status_code == 200
    refused = read_only.post("/rq/queue/trends/queued/empty", headers=basic("ops", "s3cret"))
    assert refused.status_code == 403 and "read-only" in refused.json["message"]


def test_failed_dashboard_logins_are_throttled_per_address_across_pages(dashboard, redis_client):
    client = dashboard.test_client()
    pages = ["/rq/", "/rq/0/view/workers", "/rq/0/data/queues.json", "/rq/0/view/jobs"]
    statuses = [client.get(pages[n % 4], headers=basic("ops", f"guess{n}")).status_code for n in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    assert client.get("/rq/", headers=basic("ops", "s3cret")).status_code == 429, "even the right password, for now"
    other = client.get("/rq/", headers=basic("ops", "s3cret"), environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 200, "another address is not locked out"


def dashboard_get(url: str, password: str, source: str, together: threading.Barrier | None = None
                  ) -> tuple[int, str | None, str]:
    """GET a dashboard `url` as user "ops" with `password` from the loopback address `source`, once all `together` are
    connected; give the status, Retry-After and body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        connection.connect()
        if together:
            together.wait(timeout=30)
        connection.request("GET", parts.path, headers=basic("ops", password))
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After"), response.read().decode()
    finally:
        connection.close()


def test_parallel_wrong_dashboard_logins_get_at_most_the_limits_worth_of_checks(redis_server, redis_client, tmp_path):
    """100 guesses at once from one address: 10 compared (401), 90 refused before comparing (429); users browse on."""
    web = WebServer(redis_server.url, tmp_path / "web.log", WEB_PROCESSES=2, DASHBOARD_USER="ops",
                    DASHBOARD_PASSWORD="s3cret")  # the default DASHBOARD_LOGIN_LIMIT, 10/minute
    pages = [web.url + page for page in ("/rq/", "/rq/0/view/workers", "/rq/0/data/queues.json", "/rq/0/view/jobs")]
    try:
        with ThreadPoolExecutor(6) as browser:  # a browser's connections to one host
            # A user browsing (every request carries the password) is not charged: 60 pages, six times the limit.
            browsing = list(browser.map(lambda n: dashboard_get(pages[n % 4], "s3cret", "127.0.0.3")[0], range(60)))
        assert browsing == [200] * 60
        with ThreadPoolExecutor(100) as pool:
            together = threading.Barrier(100)  # all connected, then all sent at once
            guesses = list(pool.map(lambda n: dashboard_get(pages[n % 4], f"guess{n}", "127.0.0.1", together),
                                    range(100)))
        statuses = [status for status, _, _ in guesses]
        assert statuses.count(401) == 10 and statuses.count(429) == 90, sorted(statuses)
        refused = [(retry_after, body) for status, retry_after, body in guesses if status == 429]
        assert all(int(retry_after) > 0 and "retry in" in json.loads(body)["message"] for retry_after, body in refused)
        assert dashboard_get(pages[0], "s3cret", "127.0.0.1")[0] == 429, "that address waits, right password or not"
        assert dashboard_get(pages[0], "s3cret", "127.0.0.2")[0] == 200, "another address is not locked out"
        assert dashboard_get(pages[0], "s3cret", "127.0.0.3")[0] == 200, "nor is the user browsing"
    finally:
        web.stop()


def test_pages_and_api_answers_carry_security_headers(client):
    for response in (client.get("/"), client.post("/get_trends", data=b"{")):
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


def test_debug_is_off_and_errors_never_show_a_traceback(app, client):
    assert not app.debug
    response = client.post("/get_trends", data=b'{"symbols": [{"$gt": ""}]}', content_type="application/json")
    assert response.status_code == 400 and "Traceback" not in response.get_data(as_text=True)
    assert response.mimetype == "application/json"

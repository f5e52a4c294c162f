"""The web app's defences: rate limits per client, security headers, no debug, JSON-only errors."""
from webapp import create_app


def test_the_api_is_rate_limited_per_client_with_the_error_shape(redis_server, redis_client):
    client = create_app({"REDIS_URL": redis_server.url, "RATE_LIMIT_SUBMIT": "3/minute"}).test_client()
    answers = [client.post("/api/analyses", json={"symbols": ["AAPL"]}) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[3].json["status"] == "error" and "3 per 1 minute" in answers[3].json["message"]
    assert int(answers[3].headers["Retry-After"]) > 0
    other = client.post("/api/analyses", json={"symbols": ["AAPL"]}, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 202, "another client has its own allowance"
    assert client.get(answers[0].json["status_url"]).status_code == 200, "polling has a limit of its own"


def test_limits_are_shared_by_every_web_process(redis_server, redis_client):
    first, second = (create_app({"REDIS_URL": redis_server.url, "RATE_LIMIT_SUBMIT": "2/minute"}).test_client()
                     for _ in range(2))
    assert first.post("/api/analyses", json={"symbols": ["A"]}).status_code == 202
    assert second.post("/api/analyses", json={"symbols": ["A"]}).status_code == 202
    assert first.post("/api/analyses", json={"symbols": ["A"]}).status_code == 429


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

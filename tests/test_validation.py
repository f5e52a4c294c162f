"""Every class of bad input is refused with 4xx and a message naming the problem; nothing is enqueued."""
import http.client
import json
import socket

import pytest

from jobs.fair import waiting
from webapp.validation import InvalidRequestError, parse_trends_request


def parse(body, max_symbols: int = 10):
    return parse_trends_request(json.dumps(body).encode(), max_symbols)


def test_symbols_are_trimmed_upper_cased_and_deduplicated_in_order():
    request = parse({"symbols": [" msft", "AAPL", "msft ", "aapl"]})
    assert request.symbols == ["MSFT", "AAPL"]
    assert (request.window, request.horizon, request.method) == (20, 5, "trend")


@pytest.mark.parametrize("symbol", ["BRK-B", "^GSPC", "0700.HK", "EURUSD=X", "ES=F", "BTC-USD"])
def test_real_world_tickers_are_accepted(symbol):
    assert parse({"symbols": [symbol]}).symbols == [symbol]


@pytest.mark.parametrize(
    "body, words",
    [
        (["AAPL"], 'the body: input should be an object, not ["AAPL"]'),
        ({}, '"symbols": field required'),
        ({"symbols": "AAPL"}, '"symbols": input should be a valid array, not "AAPL"'),
        ({"symbols": []}, '"symbols": list should have at least 1 item'),
        ({"symbols": [42]}, '"symbols"[0]: input should be a valid string, not 42'),
        ({"symbols": [None]}, "not null"),  # JSON's words, not Python's
        ({"symbols": ["   "]}, '"symbols"[0] is not a ticker'),
        ({"symbols": ["A" * 16]}, '"symbols"[0] is not a ticker'),
        ({"symbols": ["AAPL", "<script>"]}, '"symbols"[1]'),
        ({"symbols": ["A B"]}, "is not a ticker"),
        ({"symbols": ["../etc/passwd"]}, "is not a ticker"),
        ({"symbols": ["GS^PC"]}, "is not a ticker"),
        ({"symbols": ["ß"]}, "is not a ticker"),  # not accepted as "SS": the schema's pattern rejects it too
        ({"symbols": ["AAPL"], "window": 0}, '"window": input should be greater than or equal to 1, not 0'),
        ({"symbols": ["AAPL"], "window": 251}, '"window"'),
        ({"symbols": ["AAPL"], "window": "20"}, '"window": input should be a valid integer, not "20"'),
        ({"symbols": ["AAPL"], "window": 2.5}, '"window"'),
        ({"symbols": ["AAPL"], "horizon": True}, '"horizon": input should be a valid integer, not true'),
        ({"symbols": ["AAPL"], "horizon": 31}, '"horizon"'),
        ({"symbols": ["AAPL"], "symbol": "X"}, '"symbol": extra inputs are not permitted'),
        ({"symbols": ["AAPL"], "method": "magic"}, '"method": input should be \'trend\' or \'anchored\''),
        ({"symbols": ["AAPL"], "method": 1}, '"method"'),
        ({"symbols": ["AAPL"], "level": 1}, '"level": input should be less than or equal to 0.95, not 1'),
        ({"symbols": ["AAPL"], "level": 0.2}, '"level": input should be greater than or equal to 0.5, not 0.2'),
        ({"symbols": ["AAPL"], "level": "0.9"}, '"level": input should be a valid number, not "0.9"'),
        ({"symbols": ["AAPL"], "level": None}, '"level"'),
    ],
)
def test_bad_requests_are_refused_with_a_message_naming_the_problem(body, words):
    with pytest.raises(InvalidRequestError) as refused:
        parse(body)
    assert words in str(refused.value)


def test_more_than_max_symbols_is_refused_counting_every_item_as_the_schema_says():
    with pytest.raises(InvalidRequestError, match="at most 3 items"):
        parse({"symbols": ["A", "B", "C", "D"]}, max_symbols=3)
    with pytest.raises(InvalidRequestError, match="at most 3 items"):
        parse({"symbols": ["A"] * 10_000}, max_symbols=3)


def test_deeply_nested_json_is_refused_not_a_recursion_error():
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        parse_trends_request(b'{"symbols": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 10)


@pytest.mark.parametrize(
    "data, status",
    [
        (b'{"symbols": ["AAPL"', 400),
        (b"", 400),
        (b'{"symbols": ["AAPL"], "horizon": -1}', 400),
        (b"[" * 1000 + b"]" * 1000, 400),
        (b'{"symbols": ["' + b"A," * 600_000 + b'"]}', 413),
    ],
)
def test_the_api_answers_bad_bodies_with_the_error_shape_and_enqueues_nothing(client, app, data, status):
    response = client.post("/get_trends", data=data, content_type="application/json")
    assert response.status_code == status
    assert response.json["status"] == "error" and response.json["message"]
    assert waiting(app.redis, app.interactive_queue)[0] == 0


def test_413_names_the_limit(client):
    response = client.post("/api/analyses", data=b" " * 1_000_001, content_type="application/json")
    assert response.status_code == 413
    assert "limit of 1,000,000 bytes" in response.json["message"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/json; charset=utf-16"])
@pytest.mark.parametrize("path", ["/get_trends", "/api/analyses"])
def test_only_json_bodies_are_accepted(client, app, path, content_type, redis_client):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=b'{"symbols": ["AAPL"]}', headers=headers)
    assert response.status_code == 415 and response.json["status"] == "error"
    assert "application/json" in response.json["message"]
    assert waiting(app.redis, app.interactive_queue)[0] == 0 and not redis_client.keys("rq:job:*")


def test_a_chunked_body_over_the_limit_is_413_naming_it(web_server):
    host, port = web_server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (b'{"symbols": ["' + b"A" * 100_000 for _ in range(20))  # 2 MB with no Content-Length
    connection.request("POST", "/get_trends", body=chunks, headers={"Content-Type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413
    assert "limit of 1,000,000 bytes" in body["message"]


@pytest.mark.parametrize("broken", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"])
def test_a_broken_chunked_body_is_400_not_500(web_server, broken):
    host, port = web_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"POST /api/analyses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + broken)
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_wrong_method_is_405_with_allow_and_unknown_path_404(client):
    wrong = client.get("/get_trends")
    assert wrong.status_code == 405 and wrong.json["status"] == "error"
    assert set(wrong.headers["Allow"].split(", ")) >= {"POST"}
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json["status"] == "error"

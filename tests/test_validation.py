"""Every class of bad input is refused with 4xx and a message naming the problem; nothing is enqueued."""
import pytest

from webapp.validation import InvalidRequest, parse_trends_request


def test_symbols_are_trimmed_upper_cased_and_deduplicated_in_order():
    request = parse_trends_request({"symbols": [" msft", "AAPL", "msft ", "aapl"]}, max_symbols=10)
    assert request.symbols == ["MSFT", "AAPL"]
    assert (request.window, request.horizon, request.method) == (20, 5, "trend")


@pytest.mark.parametrize("symbol", ["BRK-B", "^GSPC", "0700.HK", "EURUSD=X", "ES=F", "BTC-USD"])
def test_real_world_tickers_are_accepted(symbol):
    assert parse_trends_request({"symbols": [symbol]}, max_symbols=10).symbols == [symbol]


@pytest.mark.parametrize(
    "body, words",
    [
        (["AAPL"], "JSON object"),
        ({}, '"symbols" is required'),
        ({"symbols": "AAPL"}, "must be a list"),
        ({"symbols": []}, "is empty"),
        ({"symbols": [42]}, "must be a string"),
        ({"symbols": ["   "]}, "symbols[0] is empty"),
        ({"symbols": ["A" * 16]}, "longer than 15"),
        ({"symbols": ["AAPL", "<script>"]}, "symbols[1]"),
        ({"symbols": ["A B"]}, "not a ticker"),
        ({"symbols": ["../etc/passwd"]}, "not a ticker"),
        ({"symbols": ["GS^PC"]}, "not a ticker"),
        ({"symbols": ["AAPL"], "window": 0}, '"window"'),
        ({"symbols": ["AAPL"], "window": 251}, '"window"'),
        ({"symbols": ["AAPL"], "window": "20"}, '"window"'),
        ({"symbols": ["AAPL"], "window": 2.5}, '"window"'),
        ({"symbols": ["AAPL"], "horizon": True}, '"horizon"'),
        ({"symbols": ["AAPL"], "horizon": 31}, '"horizon"'),
        ({"symbols": ["AAPL"], "symbol": "X"}, "unknown field"),
        ({"symbols": ["AAPL"], "method": "magic"}, '"method"'),
        ({"symbols": ["AAPL"], "method": 1}, '"method"'),
    ],
)
def test_bad_requests_are_refused_with_a_message_naming_the_problem(body, words):
    with pytest.raises(InvalidRequest) as refused:
        parse_trends_request(body, max_symbols=10)
    assert words in str(refused.value)


def test_more_than_max_symbols_is_refused():
    with pytest.raises(InvalidRequest, match="at most 3"):
        parse_trends_request({"symbols": ["A", "B", "C", "D"]}, max_symbols=3)


def test_duplicates_do_not_count_against_max_symbols():
    assert parse_trends_request({"symbols": ["A", "a", "B", "C"]}, max_symbols=3).symbols == ["A", "B", "C"]


@pytest.mark.parametrize(
    "data, status",
    [
        (b'{"symbols": ["AAPL"', 400),
        (b"", 400),
        (b'{"symbols": ["AAPL"], "horizon": -1}', 400),
        (b'{"symbols": ["' + b"A," * 600_000 + b'"]}', 413),
    ],
)
def test_the_api_answers_bad_bodies_with_the_error_shape_and_enqueues_nothing(client, app, data, status):
    response = client.post("/get_trends", data=data, content_type="application/json")
    assert response.status_code == status
    assert response.json["status"] == "error" and response.json["message"]
    assert app.interactive_queue.count == 0


def test_wrong_method_and_unknown_path_are_json_errors(client):
    assert client.get("/get_trends").status_code == 405
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json["status"] == "error"

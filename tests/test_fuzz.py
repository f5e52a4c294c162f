"""Thousands of generated bodies against the API: never a 5xx, never a trace, always the documented shapes."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Workers
from webapp import create_app

ENDPOINTS = ["/get_trends", "/api/analyses"]
FUZZ = settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
tickerish = st.from_regex(r"\s?\^?[A-Za-z0-9][A-Za-z0-9.=\-]{0,16}\s?", fullmatch=True)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"symbols": st.one_of(st.lists(st.one_of(tickerish, json_values), max_size=8), json_values)},
        optional={"window": st.one_of(st.integers(-5, 300), json_values), "horizon": st.one_of(st.integers(-5, 40), json_values),
                  "extra": json_values},
    ),
)


@pytest.fixture(scope="module")
def fuzz_client(redis_server, tmp_path_factory):
    """The app with its default waiting, and two real workers on synthetic prices answering the valid bodies."""
    workers = Workers(redis_server.url, tmp_path_factory.mktemp("fuzz") / "workers.log", 2, PRICE_SOURCE="synthetic",
                      LOG_LEVEL="WARNING")
    app = create_app({"REDIS_URL": redis_server.url, "MAX_SYMBOLS": 5,
                      "RATE_LIMIT_SUBMIT": "1000000/minute", "RATE_LIMIT_POLL": "1000000/minute"})
    yield app, app.test_client()
    workers.stop()


def check(response) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text
    body = json.loads(text)
    if response.status_code >= 400:
        assert set(body) == {"status", "message"} and body["status"] == "error" and body["message"]
    elif response.status_code == 200:
        assert body["status"] in ("success", "partial", "error") and isinstance(body["results"], list)
    else:
        assert response.status_code == 202 and body["status_url"].startswith("/api/analyses/")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ
@given(body=bodies)
def test_generated_json_bodies(fuzz_client, endpoint, body):
    _, client = fuzz_client
    check(client.post(endpoint, data=json.dumps(body), content_type="application/json"))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ
@given(raw=st.binary(max_size=200))
def test_generated_raw_bytes(fuzz_client, endpoint, raw):
    _, client = fuzz_client
    check(client.post(endpoint, data=raw, content_type="application/json"))


def test_the_openapi_description_is_served_and_names_every_endpoint(fuzz_client):
    _, client = fuzz_client
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/get_trends", "/api/analyses", "/api/analyses/{analysis_id}"}
    assert spec["components"]["schemas"]["TrendsRequest"]["properties"]["symbols"]["maxItems"] == 5

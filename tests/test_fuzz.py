"""Thousands of generated bodies against the API: never a 5xx, never a trace, always the shapes /openapi.json serves."""
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.conftest import Workers
from webapp import create_app
from webapp.openapi import openapi_spec

ENDPOINTS = ["/get_trends", "/api/analyses"]
# Examples per test: enough for every run of `make test` to try new bodies (Hypothesis draws afresh each run);
# FUZZ_EXAMPLES=20000 make test PYTEST_ARGS=tests/test_fuzz.py digs deeper.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 500))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

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
                      "RATE_LIMIT_SYMBOLS": "1000000/minute", "RATE_LIMIT_POLL": "1000000/minute"})
    yield app, app.test_client()
    workers.stop()


SPEC = openapi_spec(5)


def bodies_allowed_by(schema: dict):
    """Bodies the served TrendsRequest schema allows, read off its pattern, bounds and enum."""
    fields = schema["properties"]
    symbols = fields["symbols"]
    optional = {name: st.integers(field["minimum"], field["maximum"]) for name, field in fields.items()
                if field.get("type") == "integer"}
    optional["method"] = st.sampled_from(fields["method"]["enum"])
    items = symbols["items"]
    ticker = st.from_regex(items["pattern"], fullmatch=True).filter(lambda text: len(text) <= items["maxLength"])
    return st.fixed_dictionaries(
        {"symbols": st.lists(ticker, min_size=symbols["minItems"], max_size=symbols["maxItems"])}, optional=optional)


def check(response, endpoint: str) -> None:
    """No 5xx, no trace, and the body is what the served schema says for this endpoint and status."""
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text
    responses = SPEC["paths"][endpoint]["post"]["responses"]
    assert str(response.status_code) in responses, f"{response.status_code} is not documented for {endpoint}"
    schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
    Draft202012Validator({**schema, "components": SPEC["components"]}).validate(json.loads(text))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ
@given(body=bodies)
def test_generated_json_bodies(fuzz_client, endpoint, body):
    _, client = fuzz_client
    check(client.post(endpoint, data=json.dumps(body), content_type="application/json"), endpoint)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@settings(FUZZ, max_examples=EXAMPLES // 2)
@given(body=st.deferred(lambda: bodies_allowed_by(SPEC["components"]["schemas"]["TrendsRequest"])))
def test_every_body_the_served_schema_allows_is_accepted(fuzz_client, endpoint, body):
    _, client = fuzz_client
    response = client.post(endpoint, data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    check(response, endpoint)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ
@given(raw=st.binary(max_size=200))
def test_generated_raw_bytes(fuzz_client, endpoint, raw):
    _, client = fuzz_client
    check(client.post(endpoint, data=raw, content_type="application/json"), endpoint)


def test_the_openapi_description_is_served_and_names_every_endpoint(fuzz_client):
    _, client = fuzz_client
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/get_trends", "/api/analyses", "/api/analyses/{analysis_id}"}
    assert spec["components"]["schemas"]["TrendsRequest"]["properties"]["symbols"]["maxItems"] == 5

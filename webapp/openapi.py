"""The OpenAPI description of the JSON API, served at /openapi.json (and used by the fuzz tests).

The request schema is the pydantic model's own (webapp/validation.py), so what is documented is what is accepted.
"""
import functools
from typing import Any

from jobs.records import FAILURE_REASONS, VERSION
from webapp.analyses import ANALYSIS_ID_PATTERN, ANALYSIS_STATES
from webapp.validation import METHODS, request_model


@functools.lru_cache(maxsize=4)  # built once per MAX_SYMBOLS (~1.5 ms); never modified after
def openapi_spec(max_symbols: int) -> dict[str, Any]:
    """Describe the JSON API in OpenAPI 3.1, with this deployment's MAX_SYMBOLS as the most symbols a request may have."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Stock trends", "version": VERSION,
                 "description": "Per symbol: the moving average of a year of daily closes and a linear-regression forecast."},
        "paths": _paths(),
        "components": {"schemas": _schemas(max_symbols)},
    }


def _ref(schema: str) -> dict[str, str]:
    """Point at one of the component schemas."""
    return {"$ref": f"#/components/schemas/{schema}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Describe an answer whose body is JSON of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _paths() -> dict[str, Any]:
    """Describe each endpoint: what it takes, and every answer it gives, refusals included."""
    error = _ref("Error")
    bad_request = _json_response("Invalid request; nothing was enqueued", error)
    limited = _json_response("Too many requests from this client", error)
    unavailable = _json_response("Redis unreachable or full, or (for bulk requests) the backlog too long; "
                                 "Retry-After says when to try again", error)
    refused = {"400": bad_request, "413": bad_request, "415": bad_request, "429": limited, "503": unavailable}
    body = {"required": True, "content": {"application/json": {"schema": _ref("TrendsRequest")}}}
    return {
        "/get_trends": {"post": {
            "summary": "Analyse symbols and answer when all are done (or TRENDS_TIMEOUT passed)",
            "requestBody": body,
            "responses": {"200": _json_response("Per-symbol results", _ref("TrendsResponse")), **refused},
        }},
        "/api/analyses": {"post": {
            "summary": "Start an analysis and answer at once",
            "requestBody": body,
            "responses": {"202": {"description": "Started", "headers": {"Location": {"schema": {"type": "string"}}},
                                  "content": {"application/json": {"schema": _ref("Started")}}},
                          **refused},
        }},
        "/api/analyses/{analysis_id}": {"get": {
            "summary": "State, counts and per-symbol results of an analysis",
            "parameters": [{"name": "analysis_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": f"^{ANALYSIS_ID_PATTERN}$"}},
                           {"name": "since", "in": "query", "required": False,
                            "description": "the `cursor` of an earlier answer for this analysis: the results it "
                                           "carried are left out (their symbols keep their state)",
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}}],
            "responses": {"200": _json_response("The analysis", _ref("Analysis")),
                          "400": _json_response("A since that is not a cursor of this analysis", error),
                          "404": _json_response("Unknown or expired", error), "429": limited, "503": unavailable},
        }},
    }


def _schemas(max_symbols: int) -> dict[str, Any]:
    """Describe the request and every body the API answers with."""
    return {
        "TrendsRequest": request_model(max_symbols).model_json_schema(),
        "Result": _result_schema(),
        "TrendsResponse": {"type": "object", "required": ["results", "status", "message"], "properties": {
            "results": {"type": "array", "items": _ref("Result")},
            "status": {"type": "string", "enum": ["success", "partial", "error"]}, "message": {"type": "string"}}},
        "Started": {"type": "object", "required": ["id", "status_url"],
                    "properties": {"id": {"type": "string"}, "status_url": {"type": "string"}}},
        "Analysis": {"type": "object", "required": ["id", "state", "done", "total", "symbols", "cursor"], "properties": {
            "id": {"type": "string"},
            "cursor": {"type": "string", "description": "pass as `since` next time to get only the results new since "
                                                        "this answer"},
            "state": {"type": "string", "enum": list(ANALYSIS_STATES)}, "method": {"type": "string", "enum": list(METHODS)},
            "done": {"type": "integer"}, "total": {"type": "integer"}, "window": {"type": "integer"},
            "horizon": {"type": "integer"}, "level": {"type": "number"},
            "symbols": {"type": "array", "items": {"type": "object", "required": ["symbol", "state"], "properties": {
                "symbol": {"type": "string"}, "state": {"type": "string", "enum": ["queued", "running", "done", "error"]},
                "result": _ref("Result")}}}}},
        "Error": {"type": "object", "required": ["status", "message"], "additionalProperties": False, "properties": {
            "status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}},
    }


def _result_schema() -> dict[str, Any]:
    """Describe one symbol's result: its prices, trend and forecast, or its error."""
    numbers = {"type": "array", "items": {"type": "number"}}
    dates = {"type": "array", "items": {"type": "string", "format": "date"}}
    # A percentage error against a zero close is infinite: JSON has no Infinity, so it is null.
    errors = {"type": "array", "items": {"type": ["number", "null"]}}
    return {"type": "object", "required": ["symbol"], "properties": {
        "symbol": {"type": "string"}, "source": {"type": "string", "enum": ["yahoo", "csv", "synthetic"]},
        "adjusted": {"type": "boolean", "description": "whether the closes are adjusted for splits and dividends "
                                                       "(yahoo: true; csv: the file's Close as it is; synthetic: false)"},
        "error": {"type": "string"},
        "reason": {"type": "string", "enum": list(FAILURE_REASONS), "description": "why the symbol failed (with error)"},
        "window": {"type": "integer"}, "horizon": {"type": "integer"},
        "dates": dates, "closes": numbers, "trend": numbers, "predictions": numbers, "prediction_dates": dates,
        "last_close": {"type": "number"}, "method": {"type": "string", "enum": list(METHODS)},
        "prediction_lower": {"type": ["array", "null"], "items": {"type": "number"}},
        "prediction_upper": {"type": ["array", "null"], "items": {"type": "number"}},
        "interval": {"type": ["object", "null"], "description": "what the likely range is: its level, and the share "
                     "of this symbol's outcomes in its year that fell inside ranges built the same way from the "
                     "errors known before each (null: too short a year)",
                     "properties": {"level": {"type": "number"}, "coverage": {"type": ["number", "null"]}}},
        "backtest": {"type": ["object", "null"], "description": "errors per horizon day over past origins",
                     "properties": {"origins": {"type": "integer"},
                                    **{name: errors for name in ("mape", "mae", "naive_mape", "naive_mae")}}}}}

"""The OpenAPI description of the JSON API, served at /openapi.json (and used by the fuzz tests).

The request schema is the pydantic model's own (webapp/validation.py), so what is documented is what is accepted.
"""
from webapp.analyses import ANALYSIS_STATES
from webapp.validation import METHODS, request_model


def openapi_spec(max_symbols: int) -> dict:
    error = {"$ref": "#/components/schemas/Error"}
    bad_request = {"description": "Invalid request; nothing was enqueued", "content": {"application/json": {"schema": error}}}
    unavailable = {"description": "Redis unreachable", "content": {"application/json": {"schema": error}}}
    limited = {"description": "Too many requests from this client", "content": {"application/json": {"schema": error}}}
    body = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TrendsRequest"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Stock trends", "version": "1.0.0",
                 "description": "Per symbol: the moving average of a year of daily closes and a linear-regression forecast."},
        "paths": {
            "/get_trends": {"post": {
                "summary": "Analyse symbols and answer when all are done (or TRENDS_TIMEOUT passed)",
                "requestBody": body,
                "responses": {"200": {"description": "Per-symbol results", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/TrendsResponse"}}}},
                    "400": bad_request, "413": bad_request, "415": bad_request, "429": limited, "503": unavailable},
            }},
            "/api/analyses": {"post": {
                "summary": "Start an analysis and answer at once",
                "requestBody": body,
                "responses": {"202": {"description": "Started", "headers": {"Location": {"schema": {"type": "string"}}},
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Started"}}}},
                              "400": bad_request, "413": bad_request, "415": bad_request, "429": limited,
                              "503": unavailable},
            }},
            "/api/analyses/{analysis_id}": {"get": {
                "summary": "State, counts and per-symbol results of an analysis",
                "parameters": [{"name": "analysis_id", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}],
                "responses": {"200": {"description": "The analysis", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Analysis"}}}},
                    "404": {"description": "Unknown or expired", "content": {"application/json": {"schema": error}}},
                    "429": limited, "503": unavailable},
            }},
        },
        "components": {"schemas": {
            "TrendsRequest": request_model(max_symbols).model_json_schema(),
            "Result": {"type": "object", "required": ["symbol"], "properties": {
                "symbol": {"type": "string"}, "source": {"type": "string", "enum": ["yahoo", "csv", "synthetic"]},
                "error": {"type": "string"}, "window": {"type": "integer"}, "horizon": {"type": "integer"},
                "dates": {"type": "array", "items": {"type": "string", "format": "date"}},
                "closes": {"type": "array", "items": {"type": "number"}},
                "trend": {"type": "array", "items": {"type": "number"}},
                "predictions": {"type": "array", "items": {"type": "number"}},
                "prediction_dates": {"type": "array", "items": {"type": "string", "format": "date"}},
                "last_close": {"type": "number"}, "method": {"type": "string", "enum": list(METHODS)},
                "prediction_lower": {"type": ["array", "null"], "items": {"type": "number"}},
                "prediction_upper": {"type": ["array", "null"], "items": {"type": "number"}},
                "backtest": {"type": ["object", "null"], "description": "errors per horizon day over past origins",
                             "properties": {"origins": {"type": "integer"},
                                            **{name: {"type": "array", "items": {"type": "number"}}
                                               for name in ("mape", "mae", "naive_mape", "naive_mae")}}}}},
            "TrendsResponse": {"type": "object", "required": ["results", "status", "message"], "properties": {
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
                "status": {"type": "string", "enum": ["success", "partial", "error"]}, "message": {"type": "string"}}},
            "Started": {"type": "object", "required": ["id", "status_url"],
                        "properties": {"id": {"type": "string"}, "status_url": {"type": "string"}}},
            "Analysis": {"type": "object", "required": ["id", "state", "done", "total", "symbols"], "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": list(ANALYSIS_STATES)}, "method": {"type": "string", "enum": list(METHODS)},
                "done": {"type": "integer"}, "total": {"type": "integer"}, "window": {"type": "integer"},
                "horizon": {"type": "integer"},
                "symbols": {"type": "array", "items": {"type": "object", "required": ["symbol", "state"], "properties": {
                    "symbol": {"type": "string"}, "state": {"type": "string", "enum": ["queued", "running", "done", "error"]},
                    "result": {"$ref": "#/components/schemas/Result"}}}}}},
            "Error": {"type": "object", "required": ["status", "message"], "additionalProperties": False, "properties": {
                "status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}},
        }},
    }

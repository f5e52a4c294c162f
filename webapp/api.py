"""The JSON API: POST /get_trends (DESIGN.md's contract) and the async analyses the page uses."""
from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import NotFound

from webapp.analyses import analysis_status, start_analysis, wait_for_analysis
from webapp.openapi import openapi_spec
from webapp.validation import InvalidRequest, TrendsRequest, parse_trends_request

bp = Blueprint("api", __name__)


def _trends_request() -> TrendsRequest:
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise InvalidRequest('the body is not valid JSON; send {"symbols": ["AAPL", "MSFT"]}')
    return parse_trends_request(body, current_app.config["MAX_SYMBOLS"])


def _start(trends_request: TrendsRequest) -> str:
    """Enqueue on the interactive queue, or on the bulk one for large lists so they can't starve it."""
    app = current_app
    queue = app.bulk_queue if len(trends_request.symbols) > app.config["BULK_THRESHOLD"] else app.interactive_queue
    return start_analysis(app.redis, queue, trends_request, app.config)


@bp.post("/get_trends")
def get_trends():
    """Analyse the symbols and answer when all are done (or TRENDS_TIMEOUT passed)."""
    trends_request = _trends_request()
    analysis_id = _start(trends_request)
    timeout = current_app.config["TRENDS_TIMEOUT"]
    return jsonify(wait_for_analysis(current_app.redis, analysis_id, trends_request.symbols, timeout))


@bp.post("/api/analyses")
def create_analysis():
    """Start an analysis and answer at once with where to follow it."""
    analysis_id = _start(_trends_request())
    status_url = url_for("api.get_analysis", analysis_id=analysis_id)
    return jsonify({"id": analysis_id, "status_url": status_url}), 202, {"Location": status_url}


@bp.get("/api/analyses/<analysis_id>")
def get_analysis(analysis_id: str):
    status = analysis_status(current_app.redis, analysis_id, current_app.interactive_queue.serializer)
    if status is None:
        raise NotFound(f"no analysis {analysis_id!r}: it never existed or has expired (results are kept "
                       f"{current_app.config['RESULT_TTL']} s)")
    return jsonify(status)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_spec(current_app.config["MAX_SYMBOLS"]))

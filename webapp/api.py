"""The JSON API: POST /get_trends, as DESIGN.md fixes its contract."""
from flask import Blueprint, current_app, jsonify, request

from webapp.trends import run_trends
from webapp.validation import InvalidRequest, parse_trends_request

bp = Blueprint("api", __name__)


@bp.post("/get_trends")
def get_trends():
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise InvalidRequest('the body is not valid JSON; send {"symbols": ["AAPL", "MSFT"]}')
    trends_request = parse_trends_request(body, current_app.config["MAX_SYMBOLS"])
    return jsonify(run_trends(current_app.redis, current_app.queue, trends_request, current_app.config))

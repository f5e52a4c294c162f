"""The JSON API: POST /get_trends (DESIGN.md's contract) and the async analyses the page uses."""
import logging
import re

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask_limiter.util import get_remote_address
from rq import Queue
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, RequestEntityTooLarge, UnsupportedMediaType

from webapp import analyses
from webapp.openapi import openapi_spec
from webapp.security import admit
from webapp.validation import TrendsRequest, parse_trends_request

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)
ANALYSIS_ID = re.compile(analyses.ANALYSIS_ID_PATTERN)


def _trends_request() -> TrendsRequest:
    # Only JSON: a form or text/plain body is what a cross-site page can send without a preflight.
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != "application/json" or charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"send the body as Content-Type: application/json (UTF-8), not "
                                   f"{request.content_type or 'no Content-Type'}")
    return parse_trends_request(_body(current_app.config["MAX_CONTENT_LENGTH"]), current_app.config["MAX_SYMBOLS"])


def _body(limit: int) -> bytes:
    """Read the request body, refusing it with 413 past `limit` bytes, also when it is chunked (no Content-Length)."""
    body = bytearray()
    try:
        while chunk := request.stream.read(limit + 1 - len(body)):
            body += chunk
            if len(body) > limit:
                raise RequestEntityTooLarge()
    except HTTPException:
        raise
    except Exception as exc:  # the server's own errors for a broken body (a bad chunk size, a lost connection)
        log.info("a request body could not be read: %r", exc)
        raise BadRequest("the request body could not be read (cut short or badly chunked); send it again") from None
    return bytes(body)


def _queue_for(trends_request: TrendsRequest) -> tuple[Queue, str]:
    """Admit the request, then give its queue and whose turn its jobs take there.

    Large lists go to the bulk queue, so they can't starve small ones; small ones wait in the interactive
    queue in their client's turn (its address, as the rate limits count it), so no client starves another.
    """
    app = current_app
    bulk = len(trends_request.symbols) > app.config["BULK_THRESHOLD"]
    admit(trends_request, bulk)
    return (app.bulk_queue, "") if bulk else (app.interactive_queue, get_remote_address())


@bp.post("/get_trends")
def get_trends() -> Response:
    """Analyse the symbols and answer when all are done (or TRENDS_TIMEOUT passed)."""
    trends_request = _trends_request()
    app = current_app
    return jsonify(analyses.get_trends(app.redis, *_queue_for(trends_request), trends_request, app.config))


@bp.post("/api/analyses")
def create_analysis() -> tuple[Response, int, dict[str, str]]:
    """Start an analysis and answer at once with where to follow it."""
    trends_request = _trends_request()
    app = current_app
    analysis_id = analyses.start_analysis(app.redis, *_queue_for(trends_request), trends_request, app.config)
    status_url = url_for("api.get_analysis", analysis_id=analysis_id)
    return jsonify({"id": analysis_id, "status_url": status_url}), 202, {"Location": status_url}


@bp.get("/api/analyses/<analysis_id>")
def get_analysis(analysis_id: str) -> Response:
    """Show an analysis's state, counts and per-symbol results so far (those not in `since`); 404 once it is gone."""
    config = current_app.config
    try:
        status = analyses.analysis_status(current_app.redis, analysis_id, request.args.get("since", ""),
                                          config["PRICE_SOURCE"]) \
            if ANALYSIS_ID.fullmatch(analysis_id) else None
    except analyses.CursorError as exc:
        raise BadRequest(str(exc)) from None
    except analyses.OtherSourceError as exc:
        raise NotFound(f"analysis {analysis_id!r} is not this deployment's: {exc}") from None
    if status is None:
        raise NotFound(f"no analysis {analysis_id!r}: it never existed or has expired (analyses are kept "
                       f"{current_app.config['RESULT_TTL']} s after their last result)")
    return jsonify(status)


@bp.get("/openapi.json")
def openapi() -> Response:
    """Describe this API in OpenAPI 3.1, so clients and the fuzz tests know exactly what it takes and gives."""
    return jsonify(openapi_spec(current_app.config["MAX_SYMBOLS"]))

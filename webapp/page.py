"""The page people use: a form that calls the JSON API and shows each symbol's outcome."""
from flask import Blueprint, Response, current_app, render_template, send_from_directory

from webapp.analyses import ENDED_STATES
from webapp.validation import (
    MAX_HORIZON,
    MAX_LEVEL,
    MAX_WINDOW,
    METHODS,
    MIN_LEVEL,
    PAGE_LEVELS,
    PAGE_METHOD,
    TICKER_PATTERN,
    TICKER_RULE,
    TrendsRequest,
)

bp = Blueprint("page", __name__)


@bp.get("/")
def index() -> str:
    """Render the page with the limits and choices the API enforces, so the form can never disagree with it.

    The page leads with PAGE_METHOD (listed first, chosen by default); the API's own default stays the seed's.
    """
    fields = TrendsRequest.model_fields
    methods = {PAGE_METHOD: METHODS[PAGE_METHOD], **METHODS}
    return render_template(
        "index.html", max_symbols=current_app.config["MAX_SYMBOLS"], methods=methods, ticker_pattern=TICKER_PATTERN,
        ticker_rule=TICKER_RULE, window=fields["window"].default, max_window=MAX_WINDOW,
        horizon=fields["horizon"].default, max_horizon=MAX_HORIZON, method=PAGE_METHOD, levels=PAGE_LEVELS,
        level=fields["level"].default, min_level=MIN_LEVEL, max_level=MAX_LEVEL, ended_states=" ".join(ENDED_STATES),
        result_ttl=current_app.config["RESULT_TTL"], dashboard=bool(current_app.config["DASHBOARD_PASSWORD"]),
    )


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Serve the page's icon where browsers look for it unasked (e.g. on /healthz), so that is no 404 either."""
    return send_from_directory(current_app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86_400)

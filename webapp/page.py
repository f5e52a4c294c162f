"""The page people use: a form that calls the JSON API and shows each symbol's outcome."""
from flask import Blueprint, current_app, render_template

from webapp.analyses import ENDED_STATES
from webapp.validation import MAX_HORIZON, MAX_WINDOW, METHODS, TrendsRequest

bp = Blueprint("page", __name__)


@bp.get("/")
def index() -> str:
    """Render the page with the limits and choices the API enforces, so the form can never disagree with it."""
    fields = TrendsRequest.model_fields
    return render_template(
        "index.html", max_symbols=current_app.config["MAX_SYMBOLS"], methods=METHODS,
        window=fields["window"].default, max_window=MAX_WINDOW, horizon=fields["horizon"].default,
        max_horizon=MAX_HORIZON, method=fields["method"].default, ended_states=" ".join(ENDED_STATES),
        dashboard=bool(current_app.config["DASHBOARD_PASSWORD"]),
    )

"""The page people use: a form that calls the JSON API and shows each symbol's outcome."""
from flask import Blueprint, render_template

bp = Blueprint("page", __name__)


@bp.get("/")
def index():
    return render_template("index.html")

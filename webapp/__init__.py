"""The web app: the page, the JSON API, operations, and their shared Redis connection and queues."""
import logging
from typing import Any

from flask import Flask
from redis import Redis

from config import LOG_FORMAT, Config, check_settings
from jobs.job_class import never_unpickle, trends_queues
from webapp import api, errors, ops, page, security


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app; tests pass overrides such as their own REDIS_URL."""
    app = Flask(__name__)
    app.config.from_object(Config)
    app.config.update(overrides or {})
    check_settings(app.config)
    never_unpickle()  # rq-dashboard reads jobs without naming a serializer
    app.json.sort_keys = False  # keep fields in the order the API contract lists them
    logging.basicConfig(level=app.config["LOG_LEVEL"], format=LOG_FORMAT)

    # One pool for the process; short timeouts so a dead Redis becomes a quick 503, not a hang.
    app.redis = Redis.from_url(
        app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )
    app.interactive_queue, app.bulk_queue = app.queues = trends_queues(app.redis, app.config)
    errors.register_error_handlers(app)
    limiter = security.protect(app, api.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    ops.record_latency(app)
    ops.mount_dashboard(app, limiter)
    return app

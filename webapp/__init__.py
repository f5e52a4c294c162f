"""The web app: the page, the JSON API, operations, and their shared Redis connection and queues."""
import logging
from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider

from config import LOG_FORMAT, Config, check_settings
from jobs.connection import connect
from jobs.job_class import never_unpickle, trends_queues
from webapp import api, errors, ops, page, security


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON written by orjson (an answer carries ~10 KB of floats per symbol); keys keep their order.

    Anything orjson does not know natively, dates included, goes through Flask's own conversion, so
    rq-dashboard's answers are what they were.
    """

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Encode `obj` as JSON text."""
        return self._encode(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Decode JSON text."""
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """Answer with `args`/`kwargs` as JSON, as `jsonify` does."""
        return self._app.response_class(self._encode(self._prepare_response_obj(args, kwargs)), mimetype=self.mimetype)

    def _encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=self.default, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app; tests pass overrides such as their own REDIS_URL."""
    app = Flask(__name__)
    app.config.from_object(Config)
    app.config.update(overrides or {})
    check_settings(app.config)
    never_unpickle()  # rq-dashboard reads jobs without naming a serializer
    app.json = OrjsonProvider(app)  # fields stay in the order the API contract lists them
    logging.basicConfig(level=app.config["LOG_LEVEL"], format=LOG_FORMAT)

    # One pool for the process; short timeouts so a dead Redis becomes a quick 503, not a hang.
    app.redis = connect(app.config["REDIS_URL"], app.config["REDIS_SENTINEL_PASSWORD"],
                        socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
    app.interactive_queue, app.bulk_queue = app.queues = trends_queues(app.redis, app.config)
    errors.register_error_handlers(app)
    limiter = security.protect(app, api.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    ops.record_latency(app)
    ops.mount_dashboard(app, limiter)
    return app

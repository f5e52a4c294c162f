"""Every error leaves as JSON {"status": "error", "message": ...}: never a stack trace, never a bare 500."""
import logging

from flask import Flask, jsonify
from flask_limiter.errors import RateLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from webapp.validation import InvalidRequest

log = logging.getLogger(__name__)


def error_response(status: int, message: str):
    return jsonify({"status": "error", "message": message}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(InvalidRequest)
    def invalid_request(exc):
        return error_response(400, str(exc))

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def redis_unreachable(exc):
        log.warning("redis unreachable: %s", exc)
        return error_response(503, "The job queue (Redis) is unreachable; try again shortly")

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc):
        return error_response(429, f"Too many requests from this address (limit: {exc.description}); retry shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unexpected error")
        return error_response(500, "Internal error; it has been logged")

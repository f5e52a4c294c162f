"""Every error leaves as JSON {"status": "error", "message": ...}: never a stack trace, never a bare 500."""
import logging

from flask import Flask, Response, jsonify
from flask_limiter.errors import RateLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from jobs.connection import NoReplicasError, NotReplicatedError
from webapp.validation import InvalidRequestError

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> tuple[Response, int]:
    """Answer with `status` and the one error body every failure has: {"status": "error", "message": ...}."""
    return jsonify({"status": "error", "message": message}), status


def redis_trouble(exc: RedisError) -> str:
    """Say in words what is wrong with Redis, for any client to read; the detail (hosts, ports, its text) is logged."""
    log.warning("redis trouble: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, MasterNotFoundError):
        return "Redis is unreachable: no sentinel names a primary that answers"
    if isinstance(exc, RedisTimeoutError):
        return "Redis is unreachable: it did not answer in time"
    if isinstance(exc, RedisConnectionError):
        return "Redis is unreachable"
    return "Redis refused the request"


def register_error_handlers(app: Flask) -> None:
    """Answer every error as JSON in words: refused requests, a full or unreachable Redis, and our own bugs."""

    @app.errorhandler(InvalidRequestError)
    def invalid_request(exc: InvalidRequestError) -> tuple[Response, int]:
        return error_response(400, str(exc))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, f"the body is larger than the limit of {limit:,} bytes (MAX_CONTENT_LENGTH)")

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def redis_unreachable(exc: RedisConnectionError | RedisTimeoutError) -> tuple[Response, int]:
        log.warning("redis unreachable: %s", exc)
        return error_response(503, "The job queue (Redis) is unreachable; try again shortly")

    @app.errorhandler(NoReplicasError)
    @app.errorhandler(NotReplicatedError)
    def redis_unreplicated(exc: RedisConnectionError) -> tuple[Response, int, dict[str, str]]:
        log.warning("redis replication not acknowledged: %s", exc)
        return unavailable("The job queue (Redis) has no replica acknowledging writes just now (a failover under "
                           "way?), so it cannot promise to keep them; try again shortly", retry_after=5)

    @app.errorhandler(OutOfMemoryError)
    def redis_full(exc: OutOfMemoryError) -> tuple[Response, int, dict[str, str]]:
        log.error("redis refuses writes: %s", exc)
        return unavailable("The job queue (Redis) is full and takes no new work; nothing queued is lost; try again "
                           "shortly", retry_after=30)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded) -> tuple[Response, int]:
        return error_response(429, f"Too many requests from this address (limit: {exc.description}); retry shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int, list[tuple[str, str]]]:
        body, status = error_response(exc.code or 500, exc.description or exc.name)
        # Keep what the exception says in headers (405's Allow, 401's WWW-Authenticate), not its HTML type.
        return body, status, [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        return error_response(500, "Internal error; it has been logged")


def unavailable(message: str, retry_after: int) -> tuple[Response, int, dict[str, str]]:
    """Answer 503 saying `message`, and when to ask again."""
    body, status = error_response(503, message)
    return body, status, {"Retry-After": str(retry_after)}

"""Per-client rate limits on the API (Flask-Limiter, counted in the shared Redis) and security headers."""
from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

# The page runs only its own scripts and styles, and may not be framed.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# rq-dashboard (behind its login) has inline scripts and compiles templates in the browser.
DASHBOARD_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def protect(app: Flask, api_blueprint) -> None:
    """Rate-limit the API per client address and add security headers to every answer."""
    limiter = Limiter(
        get_remote_address,  # behind a reverse proxy, wrap the app in werkzeug's ProxyFix first
        app=app,
        storage_uri=app.config["REDIS_URL"],
        storage_options={"key_prefix": "trends:limits"},  # inside the project's ACL key space
        strategy="moving-window",
        swallow_errors=True,  # Redis down: the request itself then answers 503
        headers_enabled=True,
    )
    limiter.limit(lambda: app.config["RATE_LIMIT_POLL" if request.method == "GET" else "RATE_LIMIT_SUBMIT"])(api_blueprint)

    @app.after_request
    def security_headers(response):
        policy = DASHBOARD_POLICY if request.blueprint == "rq_dashboard" else PAGE_POLICY
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

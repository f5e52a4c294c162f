"""Admission control (per-client budgets counted in Redis, a backlog bound), dashboard protection, security headers."""
import hmac
import time

from flask import Blueprint, Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse as parse_limit
from limits.strategies import FixedWindowRateLimiter
from werkzeug.datastructures import Authorization
from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed, ServiceUnavailable, TooManyRequests

from jobs.connection import limiter_storage
from jobs.fair import backlog
from webapp.capacity import MemoryGauge, parse_size
from webapp.validation import TrendsRequest

# The page runs only its own scripts and styles, and may not be framed.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# rq-dashboard (behind its login) has inline scripts and compiles templates in the browser.
DASHBOARD_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
BACKLOG_RETRY_AFTER = 30  # seconds a bulk request refused for the backlog is told to wait
MEMORY_RETRY_AFTER = 60  # seconds a request refused for Redis's memory is told to wait (results expire meanwhile)


def protect(app: Flask, api_blueprint: Blueprint) -> Limiter:
    """Rate-limit polling per client address and add security headers to every answer; return the limiter."""
    storage_uri, storage_options = limiter_storage(app.config["REDIS_URL"], app.config["REDIS_SENTINEL_PASSWORD"])
    limiter = Limiter(
        get_remote_address,  # behind a reverse proxy, wrap the app in werkzeug's ProxyFix first
        app=app,
        storage_uri=storage_uri,
        storage_options={"key_prefix": "trends:limits", **storage_options},  # inside the project's ACL key space
        strategy="moving-window",
        swallow_errors=True,  # Redis down: the request itself then answers 503
        headers_enabled=True,
    )
    # Submissions are charged per symbol by admit() instead, once the body is read.
    limiter.limit(lambda: app.config["RATE_LIMIT_POLL"], exempt_when=lambda: request.method != "GET")(api_blueprint)
    app.extensions["trends_limiter"] = limiter
    app.extensions["trends_memory"] = MemoryGauge(app.redis, parse_size(app.config["REDIS_MAXMEMORY"]),
                                                  lambda: backlog(app.redis, app.queues)[0])

    @app.after_request
    def security_headers(response: Response) -> Response:
        policy = DASHBOARD_POLICY if request.blueprint == "rq_dashboard" else PAGE_POLICY
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return limiter


def admit(trends_request: TrendsRequest, bulk: bool) -> None:
    """Charge the client's symbol budget (both submit endpoints share it), unless the request is refused first.

    Refused: bulk work past the backlog bound, any work past Redis's memory headroom (webapp/capacity.py).
    """
    config = current_app.config
    if bulk:  # checked first: a refused request costs the client nothing
        depth, oldest_age = backlog(current_app.redis, current_app.queues)
        if depth + len(trends_request.symbols) > config["MAX_BACKLOG"] or oldest_age > config["MAX_QUEUE_WAIT"]:
            raise _with_retry_after(ServiceUnavailable(
                f"the queue is full ({depth} symbols waiting, the oldest for {oldest_age:.0f} s); large requests "
                f"are refused until it drains (small ones are still served); retry in {BACKLOG_RETRY_AFTER} s"),
                BACKLOG_RETRY_AFTER)
    refusal = current_app.extensions["trends_memory"].refusal(len(trends_request.symbols))
    if refusal:  # any request, small ones too: a full Redis could answer nothing that was accepted
        raise _with_retry_after(ServiceUnavailable(f"{refusal}; retry in {MEMORY_RETRY_AFTER} s"), MEMORY_RETRY_AFTER)
    limit = parse_limit(config["RATE_LIMIT_SYMBOLS"])
    strategy = current_app.extensions["trends_limiter"].limiter
    client = ("symbols", get_remote_address())
    if not strategy.hit(limit, *client, cost=len(trends_request.symbols)):
        current_app.extensions["trends_memory"].release(len(trends_request.symbols))  # not admitted after all
        retry_after = max(1, int(strategy.get_window_stats(limit, *client).reset_time - time.time()))
        raise _with_retry_after(TooManyRequests(
            f"this address has used its symbol budget ({limit} symbols); retry in {retry_after} s"), retry_after)


def _with_retry_after(exc: HTTPException, seconds: int) -> HTTPException:
    exc.retry_after = seconds  # werkzeug adds the Retry-After header
    return exc


def guard_dashboard(app: Flask, limiter: Limiter) -> None:
    """Let in only the dashboard's login, its actions only from its own pages, none in read-only mode.

    At most DASHBOARD_LOGIN_LIMIT wrong credentials are compared per address (all its pages together).
    """
    # A fixed window, because a slot must be given back (limits' moving window cannot return one).
    login_checks = FixedWindowRateLimiter(limiter.storage)  # the limiter's Redis (or Sentinel group), its key prefix

    @app.before_request
    def refuse_cross_site_and_read_only_actions() -> None:
        if request.blueprint != "rq_dashboard" or _is_view(request.path):
            return
        if request.method in ("GET", "HEAD"):  # rq-dashboard also requeues on GET; only its POSTs come from its pages
            raise MethodNotAllowed(valid_methods=["POST"], description="dashboard actions must be POST requests")
        if app.config["DASHBOARD_READ_ONLY"]:
            raise Forbidden("the dashboard is read-only here (DASHBOARD_READ_ONLY)")
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        if (site and site != "same-origin") or (origin and origin != request.host_url.rstrip("/")):
            raise Forbidden("dashboard actions are accepted only from the dashboard's own pages")
        if request.path.endswith("/compact") and "@" in request.path:
            # RQ's compact renames the list away, then pushes its jobs back one by one: a worker's take in
            # between would see the client's queue empty and end its turn, stranding the jobs pushed back.
            raise Forbidden("a client's queue (QUEUE@ADDRESS) is not compacted: its jobs wait their turn there; "
                            "delete jobs or empty it instead")

    @app.before_request
    def require_dashboard_login() -> Response | None:
        if request.blueprint != "rq_dashboard":
            return None
        auth = request.authorization
        if auth and auth.type == "basic" and _is_dashboard_login(login_checks, auth):
            return None
        return Response("Log in to see the RQ dashboard.\n", 401, {"WWW-Authenticate": 'Basic realm="rq-dashboard"'})


def _is_dashboard_login(login_checks: FixedWindowRateLimiter, auth: Authorization) -> bool:
    """Compare `auth` with the dashboard's login once this address has a check left (429 if not); the right one is free.

    The check is taken (one atomic INCR in Redis) before comparing, so guesses sent in parallel cannot all
    be compared before any is counted; the right credentials give theirs back, so a user browsing the
    dashboard, whose every request carries them, is never charged. A request refused here is not compared.
    """
    limit = parse_limit(current_app.config["DASHBOARD_LOGIN_LIMIT"])
    address = ("dashboard-login", get_remote_address())
    if not login_checks.hit(limit, *address):
        retry_after = max(1, int(login_checks.get_window_stats(limit, *address).reset_time - time.time()))
        raise _with_retry_after(TooManyRequests(
            f"too many failed dashboard logins from this address (limit: {limit}); retry in {retry_after} s"),
            retry_after)
    config = current_app.config
    if _same(auth.username, config["DASHBOARD_USER"]) and _same(auth.password, config["DASHBOARD_PASSWORD"]):
        login_checks.hit(limit, *address, cost=-1)  # the fixed window's counter, down by the one taken
        return True
    return False


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())


def _is_view(path: str) -> bool:
    """Dashboard pages and data (read-only): /rq/, /rq/<n>/..., /rq/static/..., /rq/favicon.ico."""
    rest = path.removeprefix("/rq").strip("/")
    first = rest.split("/", 1)[0]
    return request.method in ("GET", "HEAD") and (not rest or first.isdigit() or first in ("static", "favicon.ico"))

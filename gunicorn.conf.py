"""Gunicorn settings for the web app, taken from config.py (gunicorn reads this file by name)."""
from gunicorn.workers.base import Worker

from config import LOG_FORMAT, Config, exit_on_bad_settings

exit_on_bad_settings()  # before gunicorn uses any of them (the app checks them again, with its overrides)
bind = f"{Config.HOST}:{Config.PORT}"
workers = Config.WEB_PROCESSES
# gevent: each connection is a greenlet, so slow or idle clients (and /get_trends requests waiting
# on Redis) hold no thread; measured against gthread in docs/security.md. A cap bounds them.
worker_class = "gevent"
worker_connections = Config.WEB_CONNECTIONS
# An idle keep-alive connection costs a greenlet, not a thread: keep it longer than clients pause
# between requests, so a client rarely sends on a connection the server is just closing.
keepalive = 10
accesslog = "-"
# gunicorn's own lines and the app's in the project's one format, at its level (merged into gunicorn's defaults).
logconfig_dict = {
    "root": {"level": Config.LOG_LEVEL, "handlers": ["console"]},
    "loggers": {"gunicorn.error": {"level": Config.LOG_LEVEL, "handlers": ["console"], "propagate": False},
                "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False}},
    "formatters": {"generic": {"format": LOG_FORMAT, "class": "logging.Formatter"}},
}
# The control socket lives in $HOME by default and would clash between instances on one host.
control_socket_disable = True


def post_worker_init(worker: Worker) -> None:
    """Keep open analyses readable from each web process (one at a time across the fleet: webapp/analyses.py)."""
    # Here, in the worker once gevent has patched it: at the top, this file would load the web app (Flask,
    # Redis, RQ, threading) into the gunicorn master, before the fork and unpatched.
    from webapp.analyses import start_keeper  # noqa: PLC0415

    start_keeper(worker.wsgi)

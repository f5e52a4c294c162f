"""Gunicorn settings for the web app, taken from config.py (gunicorn reads this file by name)."""
import os
import shutil
import tempfile

from gunicorn.arbiter import Arbiter
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


# /metrics under several web processes: prometheus_client's multiprocess mode, where each process keeps its
# metrics in files of PROMETHEUS_MULTIPROC_DIR and a scrape of any process sums them all (webapp/ops.py).


def on_starting(server: Arbiter) -> None:
    """Refuse to start if Redis refuses the password (exit 78, saying so); give this master a fresh metrics folder."""
    from scripts.redis_server import refuse_if_login_refused  # noqa: PLC0415 (redis-py only, closed before any fork)

    refuse_if_login_refused(Config.REDIS_URL)  # Redis away is an outage the app answers 503 through; this is a setting
    # A fresh metrics folder, so no earlier run's counts are summed in.
    # Once per master (a SIGHUP reload keeps it), before any worker forks and loads the app, and with it
    # prometheus_client, which reads the variable at import.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="trends-metrics-")


def child_exit(server: Arbiter, worker: Worker) -> None:
    """Drop the live-gauge files of a web process that ended (its counters and histograms still count)."""
    # Here, not at the top: the master imports prometheus_client only once the folder is set.
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Arbiter) -> None:
    """Remove this master's metrics folder."""
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

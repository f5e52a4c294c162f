"""Gunicorn settings for the web app, taken from config.py (gunicorn reads this file by name)."""
from config import Config

bind = f"{Config.HOST}:{Config.PORT}"
workers = Config.WEB_PROCESSES
# Threads, because each /get_trends request waits on Redis for its jobs while holding one.
worker_class = "gthread"
threads = Config.WEB_THREADS
accesslog = "-"
# The control socket lives in $HOME by default and would clash between instances on one host.
control_socket_disable = True


def post_worker_init(worker):
    """Each web process keeps open analyses readable (one at a time across the fleet: webapp/analyses.py)."""
    from webapp.analyses import start_keeper

    start_keeper(worker.wsgi)

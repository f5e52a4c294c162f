"""Gunicorn settings for the web app, taken from config.py (gunicorn reads this file by name)."""
from config import Config

bind = f"{Config.HOST}:{Config.PORT}"
workers = Config.WEB_PROCESSES
# gevent: each connection is a greenlet, so slow or idle clients (and /get_trends requests waiting
# on Redis) hold no thread; measured against gthread in README "Security". A cap bounds them.
worker_class = "gevent"
worker_connections = Config.WEB_CONNECTIONS
# An idle keep-alive connection costs a greenlet, not a thread: keep it longer than clients pause
# between requests, so a client rarely sends on a connection the server is just closing.
keepalive = 10
accesslog = "-"
# The control socket lives in $HOME by default and would clash between instances on one host.
control_socket_disable = True


def post_worker_init(worker):
    """Each web process keeps open analyses readable (one at a time across the fleet: webapp/analyses.py)."""
    from webapp.analyses import start_keeper

    start_keeper(worker.wsgi)

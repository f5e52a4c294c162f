"""Load for `make loadtest`: people on the page (start an analysis, poll it) and scripts calling /get_trends.

`make loadtest FLOOD=1` runs the fair-share scenario instead: one client floods from its own address
while another asks for one symbol at a time from another; its summary gives the interactive client's
p50/p99 (docs/security.md, "Fair share").
"""
import os
import random
import time

from locust import HttpUser, between, constant, task
from requests.adapters import HTTPAdapter

SYMBOLS = [f"L{i:03d}" for i in range(200)]  # a pool, so some requests share jobs as real traffic would


def some_symbols(most: int) -> list[str]:
    return random.sample(SYMBOLS, random.randint(1, most))


class PageUser(HttpUser):
    """Loads the page, starts an analysis and polls it every half second until it ends, like app.js."""

    weight = 3
    wait_time = between(0.5, 2)

    @task
    def analyse(self):
        self.client.get("/", name="GET /")
        started = self.client.post("/api/analyses", json={"symbols": some_symbols(5)}, name="POST /api/analyses")
        if started.status_code != 202:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.client.get(started.json()["status_url"], name="GET /api/analyses/[id]", catch_response=True) as poll:
                if poll.status_code != 200:
                    poll.failure(f"HTTP {poll.status_code}")
                    return
                if poll.json()["state"] in ("finished", "partial", "failed"):
                    return
            time.sleep(0.5)
        self.environment.events.request.fire(request_type="POLL", name="analysis ended", response_time=30_000,
                                             response_length=0, exception=TimeoutError("analysis did not end in 30 s"))


class ScriptUser(HttpUser):
    """Calls POST /get_trends and checks every symbol came back."""

    weight = 1
    wait_time = between(0.2, 1)

    @task
    def get_trends(self):
        symbols = some_symbols(10)
        with self.client.post("/get_trends", json={"symbols": symbols}, name="POST /get_trends", catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}")
            elif [r["symbol"] for r in answer.json()["results"]] != symbols or answer.json()["status"] != "success":
                answer.failure(f"incomplete answer: {answer.json()['message']}")


class FromAddress(HTTPAdapter):
    """Connections from one local address (loopback holds all of 127/8), so each client is its own for the app."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class ClientOnItsOwnAddress(HttpUser):
    """A client whose every connection leaves from `address`, counting the requests it sent (FLOOD=1)."""

    abstract = True
    fixed_count = 1
    address = ""

    def on_start(self):
        self.client.mount("http://", FromAddress(self.address))
        self.sent = 0


class FloodingClient(ClientOnItsOwnAddress):
    """One address sending 20-symbol analyses as fast as its budget lets it, never waiting for them."""

    wait_time = constant(0)
    address = os.environ.get("FLOOD_ADDRESS", "127.0.0.2")

    @task
    def flood(self):
        symbols = [f"FLOOD{self.sent}S{i}" for i in range(20)]  # never shared: every one is new work
        self.sent += 1
        with self.client.post("/api/analyses", json={"symbols": symbols}, name="flood: POST /api/analyses (20 symbols)",
                              catch_response=True) as answer:
            if answer.status_code == 429:  # its budget, spent: what the flood runs into, not a failure
                answer.success()
                time.sleep(1)


class InteractiveClient(ClientOnItsOwnAddress):
    """Another address asking for one new symbol at a time while the flood runs; its latency is the measure."""

    wait_time = constant(1)
    address = os.environ.get("INTERACTIVE_ADDRESS", "127.0.0.3")

    @task
    def one_symbol(self):
        self.sent += 1
        with self.client.post("/get_trends", json={"symbols": [f"ONE{self.sent}"]},
                              name="interactive: POST /get_trends (1 symbol)", catch_response=True) as answer:
            if answer.status_code != 200 or answer.json()["status"] != "success":
                answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")

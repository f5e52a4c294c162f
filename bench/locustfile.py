"""Load for `make loadtest`: people on the page (start an analysis, poll it) and scripts calling /get_trends."""
import random
import time

from locust import HttpUser, between, task

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

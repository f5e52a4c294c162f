"""Yahoo at fleet scale, through yfinance's real path: real workers on two egresses share budgets kept in Redis.

The simulated Yahoo (scripts/simulated_yahoo.py) limits each client address and bans it for a minute
over budget, as Yahoo does; each egress's workers leave from an address of their own (127.0.0.2, .3).
The full case (500 symbols at 60 a minute per egress) is `make soak`; this one is scaled to seconds.
"""
import datetime as dt
import os
import subprocess

from prometheus_client.parser import text_string_to_metric_families
from rq import Worker

from config import REFUSED, ROOT
from jobs.yahoo_transport import yahoo_session
from scripts.procfile import commands
from scripts.simulated_yahoo import start
from tests.conftest import analysis_jobs, free_port, wait_until

RATE = 5  # calls a second per egress, the simulated Yahoo's limit and the governor's budget alike
SIM_BURST, GOV_BURST = 10, 5  # the governor keeps a margin under Yahoo's burst for calls that arrive bunched
SYMBOLS = 100
EGRESSES = {"egress-a": "127.0.0.2", "egress-b": "127.0.0.3"}


def yahoo_settings(yahoo_url: str, tmp_path, egress: str = "egress-a", address: str = "127.0.0.2", **extra) -> dict:
    return {"PRICE_SOURCE": "yahoo", "YAHOO_URL": yahoo_url, "YAHOO_EGRESS": egress, "YAHOO_SOURCE_ADDRESS": address,
            "YAHOO_RATE": f"{RATE}/second", "YAHOO_BURST": GOV_BURST, "YFINANCE_CACHE_DIR": tmp_path / egress, **extra}


def live_workers(redis) -> int:
    return len(Worker.all(connection=redis))


def wait_for_the_end(client, created: dict, timeout: float) -> dict:
    """Poll the analysis until it ended; give its last status."""
    answer: dict = {}

    def ended() -> bool:
        answer.update(client.get(created["status_url"]).json)
        return answer["state"] in ("finished", "partial", "failed")

    wait_until(ended, timeout=timeout, what="the analysis to end")
    return answer


def test_two_egresses_of_ten_workers_use_their_budgets_without_a_429(app, client, redis_client, redis_server,
                                                                     start_workers, tmp_path):
    with start(rate=RATE, burst=SIM_BURST, ban=60, latency_ms=30) as yahoo:
        for egress, address in EGRESSES.items():
            start_workers(redis_server.url, 10, **yahoo_settings(yahoo.url, tmp_path, egress, address))
        wait_until(lambda: live_workers(redis_client) == 20, timeout=60, what="20 workers")
        warm_up_calls = sum(client_stats["requests"] for client_stats in yahoo.stats()["addresses"].values())
        started = dt.datetime.now(dt.timezone.utc)
        created = client.post("/api/analyses", json={"symbols": [f"FLEET{i}" for i in range(SYMBOLS)]}).json
        answer = wait_for_the_end(client, created, timeout=120)
        stats = yahoo.stats()["addresses"]

    assert answer["state"] == "finished", [s.get("result", {}).get("error") for s in answer["symbols"]][:5]
    assert set(stats) == set(EGRESSES.values()), "each egress called from its own address"
    assert all(client_stats["statuses"].keys() == {"200"} for client_stats in stats.values()), stats
    charts = sum(client_stats["kinds"].get("chart", 0) for client_stats in stats.values())
    calls = sum(client_stats["requests"] for client_stats in stats.values())
    assert charts == SYMBOLS, "one call per symbol"
    assert warm_up_calls <= 2 * len(EGRESSES) and calls == SYMBOLS + warm_up_calls, \
        "a cookie and a crumb once per host, before its workers fork"
    # What the budget allows: each egress's burst at once, then RATE a second, over every call made.
    allowed = (calls - warm_up_calls - len(EGRESSES) * GOV_BURST) / (len(EGRESSES) * RATE)  # after the timer started
    last_end = max(job.ended_at for job in analysis_jobs(redis_client, created["id"]))
    taken = (last_end - started).total_seconds()
    # 1.07-1.10x alone on this 2-core machine; 1.19x once in a full parallel test run: 1.3x leaves room for a
    # loaded machine and still fails a fleet that leaves a quarter of its budget unused.
    assert taken <= 1.3 * allowed, f"{taken:.1f} s for what the budget allows in {allowed:.1f} s"


def test_a_429_pauses_the_egress_for_its_cool_down_then_every_symbol_succeeds(app, client, redis_client, redis_server,
                                                                              start_workers, tmp_path):
    # This Yahoo allows a little more than the governor spends; another client behind the same address
    # has just got it banned for 2 s, so the egress's first calls meet 429s.
    with start(rate=RATE + 1, burst=SIM_BURST, ban=2, latency_ms=20) as yahoo:
        start_workers(redis_server.url, 4, **yahoo_settings(yahoo.url, tmp_path, YAHOO_COOLDOWN=3))
        with yahoo_session(yahoo.url, "127.0.0.2") as neighbour:
            wait_until(lambda: banned(neighbour), what="the neighbour to get the address banned")
        created = client.post("/api/analyses", json={"symbols": [f"COOL{i}" for i in range(30)]}).json
        answer = wait_for_the_end(client, created, timeout=120)
        stats = yahoo.stats()["addresses"]["127.0.0.2"]

    assert answer["state"] == "finished", [s.get("result", {}).get("error") for s in answer["symbols"]][:5]
    assert redis_client.hget("trends:stats:yahoo", "egress-a:requests:429"), "the egress met the ban"
    assert redis_client.hget("trends:stats:yahoo", "egress-a:cooldowns") == b"1", "one cool-down for the whole egress"
    first_ban_end = stats["rate_limited_at"][0] + 2
    assert all(at < first_ban_end for at in stats["rate_limited_at"]), "no 429 after the first cool-down"


def banned(session) -> bool:
    """Make one call; whether Yahoo answered it 429."""
    with session.get("https://query1.finance.yahoo.com/v1/test/getcrumb", timeout=5) as response:
        return response.status_code == 429


def metric_values(client, family: str) -> dict:
    """Each sample of one metric family in /metrics, by its labels."""
    text = client.get("/metrics").get_data(as_text=True)
    return {tuple(sorted(sample.labels.items())): sample.value
            for metric in text_string_to_metric_families(text) if metric.name == family for sample in metric.samples}


def test_metrics_tell_an_unknown_symbol_from_an_unreachable_yahoo(app, client, redis_client, redis_server,
                                                                  start_workers, tmp_path):
    queue = app.interactive_queue.name
    with start(rate=None, latency_ms=0) as yahoo:
        workers = start_workers(redis_server.url, 1, **yahoo_settings(yahoo.url, tmp_path))
        answer = client.post("/get_trends", json={"symbols": ["AAPL", "NOPE1"]}).json
        log = workers.log_text()
        workers.stop()
    assert [result.get("error") is None for result in answer["results"]] == [True, False]
    start_workers(redis_server.url, 1, **yahoo_settings(f"http://127.0.0.1:{free_port()}", tmp_path, YAHOO_RETRIES=0))
    answer = client.post("/get_trends", json={"symbols": ["MSFT"]}).json
    assert "could not be reached" in answer["results"][0]["error"]
    outcomes = metric_values(client, "trends_symbols")
    for outcome in ("ok", "unknown_symbol", "source_unavailable"):
        assert outcomes[(("outcome", outcome), ("queue", queue))] == 1, outcome
    assert "failed (unknown_symbol): NOPE1" in log, "the worker log says which symbol failed and why"


def test_a_worker_with_another_price_source_than_the_fleet_refuses_to_start(redis_client, redis_server, start_workers,
                                                                            tmp_path):
    start_workers(redis_server.url, 1, PRICE_SOURCE="synthetic")
    yahoo = {"PRICE_SOURCE": "yahoo", "YAHOO_URL": f"http://127.0.0.1:{free_port()}", "YFINANCE_CACHE_DIR": str(tmp_path / "yf")}
    env = dict(os.environ, REDIS_URL=redis_server.url, WORKERS="1", **yahoo)
    refused = subprocess.run(commands()["worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == REFUSED, "a status systemd's unit does not restart on"
    assert "live workers at this Redis use another source (synthetic on" in refused.stderr
    assert "ALLOW_MIXED_SOURCES=1" in refused.stderr
    assert live_workers(redis_client) == 1
    start_workers(redis_server.url, 1, **yahoo, ALLOW_MIXED_SOURCES=1)
    wait_until(lambda: live_workers(redis_client) == 2, what="the overridden worker to join")
    sources = {redis_client.hget(worker.key, "trends_source") for worker in Worker.all(connection=redis_client)}
    assert sources == {b"synthetic", b"yahoo"}

"""`make soak`: the fleet against a Yahoo that bans, at full scale, with the governor's default settings.

500 fresh symbols in one analysis; two egresses of 10 workers each (`worker.py` supervisors leaving
from 127.0.0.2 and 127.0.0.3); the simulated Yahoo (scripts/simulated_yahoo.py) allows 60 calls a
minute per address, bursts of 100, and bans an address for 60 s over that. It checks what issue 13
asks: every symbol succeeds, Yahoo sees at most 510 calls and no 429 after the first cool-down, and
the run takes within 15 % of what the budget allows. About four minutes. Prints a report and keeps it
in bench/soak-last-run.md (not tracked); `make soak SAVE=1` writes bench/soak-results.md.
"""
import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time

from redis import Redis
from rq.job import Job

from config import ROOT, Config, yahoo_rate_per_second
from jobs.job_class import SERIALIZER
from scripts.simulated_yahoo import start
from tests.conftest import RedisServer, WebServer, Workers, http_json, wait_until

EGRESSES = {"egress-a": "127.0.0.2", "egress-b": "127.0.0.3"}
YAHOO = {"rate": "60/minute", "burst": 100, "ban": 60, "latency_ms": 150}  # the simulated Yahoo's limits
REPORT, SAVED = (os.path.join(ROOT, "bench", name) for name in ("soak-last-run.md", "soak-results.md"))


def run(symbols: int, workers: int, scratch: str) -> dict:
    """Start everything, analyse `symbols` fresh symbols, and give what was seen."""
    redis = RedisServer(os.path.join(scratch, "redis"))
    redis.start()
    settings = {"LOG_LEVEL": "WARNING", "MAX_SYMBOLS": symbols, "PRICE_SOURCE": "yahoo"}
    with start(**{**YAHOO, "rate": yahoo_rate_per_second(YAHOO["rate"])}) as yahoo:
        fleet = [Workers(redis.url, os.path.join(scratch, f"{egress}.log"), workers, **settings, YAHOO_URL=yahoo.url,
                         YAHOO_EGRESS=egress, YAHOO_SOURCE_ADDRESS=address,
                         YFINANCE_CACHE_DIR=os.path.join(scratch, egress))
                 for egress, address in EGRESSES.items()]
        web = WebServer(redis.url, os.path.join(scratch, "web.log"), **settings)
        try:
            wait_until(lambda: len(fleet[0].names()) >= len(EGRESSES) * workers, timeout=120, what="every worker")
            warm_up = sum(client["requests"] for client in yahoo.stats()["addresses"].values())
            started = dt.datetime.now(dt.timezone.utc)
            created = http_json("POST", web.url + "/api/analyses", {"symbols": [f"SOAK{i}" for i in range(symbols)]})
            status: dict = {}

            def ended() -> bool:
                status.update(http_json("GET", web.url + created["status_url"]))
                return status["state"] in ("finished", "partial", "failed")

            wait_until(ended, timeout=3600, what="the analysis to end")
            connection = Redis.from_url(redis.url)
            ids = json.loads(connection.hget(f"trends:analysis:{created['id']}", "jobs"))
            last_end = max(Job.fetch_many(ids, connection=connection, serializer=SERIALIZER), key=lambda j: j.ended_at)
            return {"status": status, "yahoo": yahoo.stats(), "warm_up": warm_up,
                    "taken": (last_end.ended_at - started).total_seconds()}
        finally:
            web.stop()
            for group in fleet:
                group.stop()
            redis.stop()


def report(seen: dict, symbols: int, workers: int) -> tuple[str, bool]:
    """Say what was seen against issue 13's bounds; give the text and whether every bound held."""
    addresses = seen["yahoo"]["addresses"]
    calls = sum(client["requests"] for client in addresses.values())
    limited = sorted(at for client in addresses.values() for at in client["rate_limited_at"])
    results = [entry.get("result", {}) for entry in seen["status"]["symbols"]]
    ok = sum("error" not in result for result in results)
    rate = yahoo_rate_per_second(Config.YAHOO_RATE)
    # The calls after the timer started (the warm-up's came before), less each egress's burst, at its rate.
    allowed = (calls - seen["warm_up"] - len(EGRESSES) * Config.YAHOO_BURST) / (len(EGRESSES) * rate)
    late_429s = [at for at in limited if limited and at > limited[0] + Config.YAHOO_COOLDOWN]
    checks = [(f"every symbol succeeds: {ok} of {symbols}", ok == symbols),
              (f"Yahoo sees at most {symbols + 10} calls: {calls} ({seen['warm_up']} before the analysis: cookie "
               "and crumb, once per host)", calls <= symbols + 10),
              (f"no 429 after the first cool-down: {len(limited)} 429s in all, {len(late_429s)} after", not late_429s),
              (f"within 15 % of what the budget allows: {seen['taken']:.1f} s against {allowed:.1f} s "
               f"({seen['taken'] / allowed:.2f}×)", seen["taken"] <= 1.15 * allowed)]
    lines = [f"# `make soak` on this machine, {dt.date.today().isoformat()}", "",
             f"{symbols} fresh symbols, {len(EGRESSES)} egresses × {workers} workers, the governor's defaults "
             f"(YAHOO_RATE {Config.YAHOO_RATE}, YAHOO_BURST {Config.YAHOO_BURST}, YAHOO_COOLDOWN "
             f"{Config.YAHOO_COOLDOWN} s); simulated Yahoo: {YAHOO['rate']} per address, bursts of {YAHOO['burst']}, "
             f"a {YAHOO['ban']} s ban over that, {YAHOO['latency_ms']} ms median latency.", "",
             *(f"- {'met' if held else 'NOT MET'}: {text}" for text, held in checks)]
    return "\n".join(lines) + "\n", all(held for _, held in checks)


def main() -> None:
    """Run the soak and print its report; exit 1 if a bound did not hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--workers", type=int, default=10, help="per egress")
    parser.add_argument("--save", action="store_true", help="also write bench/soak-results.md")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        seen = run(args.symbols, args.workers, scratch)
    text, held = report(seen, args.symbols, args.workers)
    text += f"\n({time.monotonic() - began:.0f} s in all, start-up included)\n"
    print(text)
    for path in (REPORT, SAVED) if args.save else (REPORT,):
        with open(path, "w") as out:
            out.write(text)
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()

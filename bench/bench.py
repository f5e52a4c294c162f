"""`make bench`: how fast the project analyses many symbols, against a plain loop, on this machine.

Starts its own Redis, workers and web app (gunicorn), uses synthetic prices, and prints one
Markdown table (also written to bench/results.md). Every run uses symbols no earlier run used,
so neither the price cache nor the result reuse can help; each number is the median of RUNS
runs, with min and max.
"""
import itertools
import os
import statistics
import tempfile
import time

from config import ROOT
from jobs.forecast import backtest
from jobs.sources import SyntheticSource
from jobs.tasks import analyze_history
from tests.conftest import RedisServer, WebServer, Workers, http_json

RUNS = int(os.environ.get("BENCH_RUNS", 3))
SIZES = (1, 100, 1000)
FAST = {"LOG_LEVEL": "WARNING", "PRICE_SOURCE": "synthetic", "MAX_SYMBOLS": 1000, "BULK_THRESHOLD": 1000,
        "RATE_LIMIT_SYMBOLS": "1000000/minute", "RATE_LIMIT_POLL": "1000000/minute", "TRENDS_TIMEOUT": 120}
fresh = (f"B{n:06d}" for n in itertools.count())  # never the same symbol twice


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(action, runs: int = RUNS) -> tuple[float, float, float]:
    times = [timed(action) for _ in range(runs)]
    return statistics.median(times), min(times), max(times)


def plain_loop(count: int) -> None:
    """The same analysis in one process, no queue: the floor the distributed version is measured against."""
    source = SyntheticSource()
    for _ in range(count):
        analyze_history(source.history(next(fresh)), 20, 5)


def through_api(url: str, count: int) -> None:
    body = http_json("POST", url + "/get_trends", {"symbols": [next(fresh) for _ in range(count)]}, timeout=300)
    assert body["status"] == "success", body["message"]


def rss_mb(pid: int, field: str = "Rss") -> float:
    """Resident memory; field "Pss" shares pages among the processes using them (forked workers share much)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith(field + ":")) / 1024


def worker_pids(workers: Workers) -> list[int]:
    return [int(name.rsplit(".", 1)[1]) for name in workers.names()]


def row(name: str, stats: tuple[float, float, float], count: int) -> str:
    median, low, high = stats
    return f"| {name} | {count} | {median * 1000:.0f} | {low * 1000:.0f} – {high * 1000:.0f} | {median / count * 1000:.2f} |"


def main() -> None:
    lines = ["| case | symbols | median ms | min – max ms | ms per symbol |", "| --- | ---: | ---: | ---: | ---: |"]
    medians = {}
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(os.path.join(scratch, "redis"))
        redis.start()
        for key, value in FAST.items():
            os.environ[key] = str(value)
        web = WebServer(redis.url, os.path.join(scratch, "web.log"), WEB_PROCESSES=2, **FAST)
        try:
            for count in SIZES:
                medians[("loop", count)] = measure(lambda: plain_loop(count))
                lines.append(row("plain loop, 1 process", medians[("loop", count)], count))
            closes = [SyntheticSource().history(next(fresh)).closes for _ in range(1000)]
            lines.append(row("of which the backtest (both methods' track record)",
                             measure(lambda: [backtest(c, 5, "trend") for c in closes]), 1000))
            for workers_count in (1, 2):
                workers = Workers(redis.url, os.path.join(scratch, f"w{workers_count}.log"), workers_count, **FAST)
                through_api(web.url, 50)  # warm up both web processes and the workers
                for count in SIZES:
                    medians[(workers_count, count)] = measure(lambda: through_api(web.url, count))
                    lines.append(row(f"POST /get_trends, {workers_count} worker(s)", medians[(workers_count, count)], count))
                if workers_count == 2:
                    single = [timed(lambda: through_api(web.url, 1)) for _ in range(50)]
                    lines.append(f"| one-symbol request, 2 workers, 50 requests | 1 | p50 {statistics.median(single) * 1000:.1f} "
                                 f"| {min(single) * 1000:.1f} – {max(single) * 1000:.1f} | |")
                    memory = memory_after_many_jobs(web, workers)
                workers.stop()
            io_workers = int(os.environ.get("BENCH_IO_WORKERS", 20))
            workers = Workers(redis.url, os.path.join(scratch, "wio.log"), io_workers, SYNTHETIC_LATENCY_MS=200, **FAST)
            through_api(web.url, io_workers)
            io_rss = [rss_mb(pid) for pid in worker_pids(workers)]
            io_pss = [rss_mb(pid, "Pss") for pid in worker_pids(workers)]
            medians["io"] = measure(lambda: through_api(web.url, 100))
            lines.append(row(f"I/O-bound: 200 ms fetch each, {io_workers} workers", medians["io"], 100))
            workers.stop()
        finally:
            web.stop()
            redis.stop()
    project_vs_loop = medians[(2, 1000)][0] / medians[("loop", 1000)][0]
    ratios = [
        f"- project (2 workers) vs plain loop, 1000 symbols: {project_vs_loop:.2f}× the loop's time",
        f"- 2 workers vs 1 worker, 1000 symbols: {medians[(1, 1000)][0] / medians[(2, 1000)][0]:.2f}× the throughput",
        f"- I/O-bound, {io_workers} workers: memory per worker process: RSS {statistics.median(io_rss):.0f} MB, "
        f"PSS {statistics.median(io_pss):.0f} MB (its fair share of pages shared with the other forked workers)",
        f"- memory over 10,000 more jobs (2 workers): {memory}",
    ]
    report = "\n".join(lines + [""] + ratios) + "\n"
    print(report)
    with open(os.path.join(ROOT, "bench", "results.md"), "w") as out:
        out.write(f"# `make bench` on this machine ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}\n\n{report}")


def memory_after_many_jobs(web: WebServer, workers: Workers) -> str:
    """RSS of the web app and each worker before and after 10,000 jobs, to show it does not keep growing."""
    with open(f"/proc/{web.process.pid}/task/{web.process.pid}/children") as children:  # gunicorn's processes
        web_pids = [int(pid) for pid in children.read().split()]
    pids = {**{f"web {i + 1}": pid for i, pid in enumerate(web_pids)},
            **{f"worker {i + 1}": pid for i, pid in enumerate(sorted(worker_pids(workers)))}}
    before = {name: rss_mb(pid) for name, pid in pids.items()}
    for _ in range(10):
        through_api(web.url, 1000)
    after = {name: rss_mb(pid) for name, pid in pids.items()}
    return ", ".join(f"{name} {before[name]:.0f} → {after[name]:.0f} MB" for name in pids)


if __name__ == "__main__":
    main()

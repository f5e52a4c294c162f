"""`make bench`: this project against the seed's Celery design, side by side in one run on this machine.

Both systems analyse the same kind of synthetic prices (252 closes a symbol, no network). Each
request uses symbols no earlier request used, so neither the price cache nor result reuse helps.
A request is timed from sending it to the last byte of its answer, as HTTP load tools time one;
decoding the JSON is the client's work, and is reported apart (the answers differ in size).
Timings alternate run by run, project and peer, and 2 workers against 1 (two systems side by
side), and each figure is the median of RUNS runs (min and max beside it). 2 workers against 1
is also measured for the fleet alone (jobs queued first, then fresh workers), and a one-symbol
request is split into phases by the times RQ records in its job. One symbol is timed with a new
connection per request and on a kept-alive connection; a bulk job's start on an idle fleet and
BULK_THRESHOLD symbols against one more are measured too. The project runs its shipped defaults
but for the request size, the rate budgets and synthetic prices (bench/systems.py CHANGED, listed in
the report); the peer runs as its README says. Prints a Markdown
report and keeps it in bench/last-run.md; `make bench SAVE=1` writes bench/results.md, the one
the docs quote.
"""
import http.client
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from rq.job import Job
from rq.utils import utcparse

from bench.systems import CHANGED, Peer, Project, System, cpu_seconds, rss_mb
from config import ROOT, Config
from jobs.records import JOB_STATS_KEY, current_job_key, record_key, trading_day
from jobs.sources import SyntheticSource
from jobs.tasks import analyze_history
from tests.conftest import SentinelGroup, WebServer, Workers
from webapp.shared_jobs import work_ids
from webapp.validation import TrendsRequest

RUNS = int(os.environ.get("BENCH_RUNS", 3))
IO_WORKERS, IO_LATENCY = 20, 0.2  # the I/O-bound case: each fetch takes 200 ms
fresh = (f"B{n:07d}" for n in itertools.count())  # never the same symbol twice


def ask(system: System, count: int) -> float:
    """Seconds one POST /get_trends of `count` fresh symbols takes to answer in full (its last byte received)."""
    return answer(system, count)[0]


def answer(system: System, count: int, symbols: list[str] | None = None) -> tuple[float, bytes]:
    """Seconds to the last byte of one POST /get_trends of `count` fresh symbols (or these), and the answer, checked."""
    symbols = symbols or [next(fresh) for _ in range(count)]
    request = urllib.request.Request(system.url + "/get_trends", data=json.dumps({"symbols": symbols}).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            raw = response.read()
    except urllib.error.HTTPError as refused:
        raise AssertionError(f"{system.name} answered {refused.code}: {refused.read()[:500]!r}") from None
    elapsed = time.perf_counter() - started
    body = json.loads(raw)
    assert body["status"] == "success" and len(body["results"]) == count, body.get("message")
    return elapsed, raw


class KeepAlive:
    """A client that keeps one connection open across requests (reopened if the server closes it), as browsers do."""

    def __init__(self, system: System) -> None:
        parts = urlsplit(system.url)
        self.system, self.connection = system, http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)

    def ask(self, count: int) -> float:
        """Seconds to the last byte of one POST /get_trends of `count` fresh symbols on the kept connection."""
        body = json.dumps({"symbols": [next(fresh) for _ in range(count)]})
        for attempt in range(2):
            started = time.perf_counter()
            try:
                self.connection.request("POST", "/get_trends", body, {"Content-Type": "application/json"})
                response = self.connection.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.connection.close()  # closed by the server while idle: the next try opens a new one
                if attempt:
                    raise
        elapsed = time.perf_counter() - started
        assert response.status == 200 and json.loads(raw)["status"] == "success", raw[:500]
        return elapsed


def job_times(redis: Redis, ids: list[str]) -> list[tuple[float, float, float]]:
    """When RQ recorded each job queued, started and ended (epoch seconds), in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(Job.key_for(job_id), "enqueued_at", "started_at", "ended_at")
    return [tuple(utcparse(stamp.decode()).timestamp() for stamp in stamps) for stamps in pipe.execute()]


def spread(times: list[float]) -> str:
    """Median (min – max) in seconds."""
    return f"{statistics.median(times):.3f} ({min(times):.3f} – {max(times):.3f})"


def side_by_side(systems: list[System], count: int, runs: int = RUNS) -> dict[str, list[float]]:
    """Each system's times for `count` symbols, alternating systems run by run."""
    times: dict[str, list[float]] = {system.name: [] for system in systems}
    for _ in range(runs):
        for system in systems:
            times[system.name].append(ask(system, count))
    return times


def one_symbol_phases(project: Project, runs: int = 50) -> str:
    """Note: where a one-symbol request's time goes, from the times RQ records in its job (medians, ms)."""
    redis, phases = project.client(), []
    for _ in range(runs):
        symbol = next(fresh)
        pointer = current_job_key(work_ids(TrendsRequest(symbols=[symbol]), trading_day(), CHANGED["PRICE_SOURCE"])[0])
        sent = time.time()
        received = sent + answer(project, 1, [symbol])[0]
        queued, started, ended = job_times(redis, [redis.get(pointer).decode()])[0]
        phases.append((queued - sent, started - queued, ended - started, received - ended, received - sent))
    names = ("in the web app until its job was recorded (HTTP in, checks, budget, the claim's recording)",
             "queued (the claim's script, a worker's wake, the job read and the attempt registered)",
             "running (the prices and the analysis)",
             "to the answer's last byte (the result recorded and stored, the web app's wake, the answer, HTTP out)")
    medians = [statistics.median(phase) * 1000 for phase in zip(*phases)]
    return (f"- one-symbol request, where the time goes ({runs} more requests, medians of what RQ records in each job): "
            + "; ".join(f"{name} {median:.1f} ms" for name, median in zip(names, medians))
            + f"; in all {medians[-1]:.1f} ms (medians each: they need not add up)")


def drain(project: Project, workers: int, count: int = 1000) -> float:
    """Seconds `workers` fresh workers take to run `count` jobs queued before they started: first start to last end.

    The fleet alone: the web app records the jobs (an async analysis) while no worker runs, and is
    idle while they run; Redis shares the machine's cores with the workers, as it must.
    """
    project.stop_workers()
    request = urllib.request.Request(project.url + "/api/analyses", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"symbols": [next(fresh) for _ in range(count)]}).encode())
    with urllib.request.urlopen(request, timeout=600) as response:
        analysis = json.load(response)["id"]
    redis = project.client()
    ids = json.loads(redis.hget(record_key(analysis), "jobs"))
    ended = lambda: sum(int(count) for count in redis.hgetall(JOB_STATS_KEY).values())  # noqa: E731 (the workers' tally)
    before, deadline = ended(), time.monotonic() + 600
    project.start_workers(workers)
    while ended() < before + count:  # one command a poll: the workers have the CPUs
        assert time.monotonic() < deadline, "the jobs did not end within 600 s"
        time.sleep(0.1)
    times = job_times(redis, ids)
    return max(ended for _, _, ended in times) - min(started for _, started, _ in times)


def cost(system: System, count: int = 1000) -> dict[str, float]:
    """CPU seconds per process kind, Redis commands per symbol, and the answer's size and decoding, over `count` symbols."""
    pids, redis = system.pids(), system.client()
    commands = lambda: sum(stat["calls"] for stat in redis.info("commandstats").values())  # noqa: E731
    cpu = lambda: {kind: sum(map(cpu_seconds, ids)) for kind, ids in pids.items()}  # noqa: E731
    cpu_before, commands_before = cpu(), commands()
    raw = answer(system, count)[1]
    cpu_after, commands_after = cpu(), commands()
    decoding = statistics.median(timeit.repeat(lambda: json.loads(raw), number=1, repeat=3))
    return {**{f"{kind} CPU s": cpu_after[kind] - cpu_before[kind] for kind in pids},
            "Redis commands per symbol": (commands_after - commands_before) / count,
            "answer, KB per symbol": len(raw) / count / 1024,
            "client's decoding of the answer (Python's json, median of 3), s": decoding}


def plain_loop(count: int) -> float:
    """The same analysis in one process, no queue: the floor the distributed systems are measured against."""
    source = SyntheticSource()
    started = time.perf_counter()
    for _ in range(count):
        analyze_history(source.history(next(fresh)), 20, 5)
    return time.perf_counter() - started


def compare(project: Project, peer: Peer) -> list[str]:
    """Rows of the side-by-side table: 100 and 1000 symbols, and the one-symbol latency."""
    rows = []
    for count in (100, 1000):
        times = side_by_side([project, peer], count)
        ratio = statistics.median(times["project"]) / statistics.median(times["peer"])
        rows.append(f"| {count} symbols, {len(project.pids()['worker'])} workers and 2 Celery processes, s | "
                    f"{spread(times['project'])} | {spread(times['peer'])} | "
                    f"**{ratio:.2f}×** |")
    single = side_by_side([project, peer], 1, runs=50)
    p50 = {name: statistics.median(times) * 1000 for name, times in single.items()}
    rows.append(f"| one-symbol request, a new connection each, p50 of 50, ms | {p50['project']:.1f} | {p50['peer']:.1f} | "
                f"**{p50['project'] / p50['peer']:.2f}×** |")
    clients = {system.name: KeepAlive(system) for system in (project, peer)}
    kept: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(50):
        for name, client in clients.items():
            kept[name].append(client.ask(1))
    p50 = {name: statistics.median(times) * 1000 for name, times in kept.items()}
    rows.append(f"| one-symbol request, a kept-alive connection, p50 of 50, ms | {p50['project']:.1f} | "
                f"{p50['peer']:.1f} | **{p50['project'] / p50['peer']:.2f}×** |")
    return rows


def past_the_threshold(project: Project, runs: int = 10) -> str:
    """Note: BULK_THRESHOLD symbols (the interactive queue) against one more (the bulk queue), alternating."""
    sizes = (Config.BULK_THRESHOLD, Config.BULK_THRESHOLD + 1)
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(runs):
        for size in sizes:
            times[size].append(ask(project, size))
    ratio = statistics.median(times[sizes[1]]) / statistics.median(times[sizes[0]])
    return (f"- just past BULK_THRESHOLD, alternating, {runs} each: {sizes[1]} symbols (bulk queue) {spread(times[sizes[1]])} s "
            f"against {sizes[0]} (interactive) {spread(times[sizes[0]])} s: **{ratio:.2f}×**")


def bulk_start(project: Project, runs: int = 100) -> str:
    """Note: on an idle fleet, how long after its enqueue a bulk request's first job starts (RQ's own timestamps)."""
    redis, waits = project.client(), []
    for _ in range(runs):
        symbols = [next(fresh) for _ in range(Config.BULK_THRESHOLD + 1)]
        answer(project, len(symbols), symbols)  # answered in full: the fleet is idle again before the next
        works = work_ids(TrendsRequest(symbols=symbols), trading_day(), CHANGED["PRICE_SOURCE"])
        ids = [redis.get(current_job_key(work)).decode() for work in works]
        queued, started, _ = min(job_times(redis, ids))
        waits.append((started - queued) * 1000)
    waits.sort()
    p99 = waits[math.ceil(0.99 * len(waits)) - 1]  # nearest rank
    return (f"- a bulk job's start on an idle fleet, after its enqueue ({runs} requests of {Config.BULK_THRESHOLD + 1} "
            f"symbols, the first job of each): p50 {statistics.median(waits):.1f} ms, **p99 {p99:.1f} ms**, "
            f"max {waits[-1]:.1f} ms")


def costs(project: Project, peer: Peer) -> list[str]:
    """Rows of the cost table: CPU per process kind and Redis commands, per 1000 symbols."""
    ours, theirs = cost(project), cost(peer)
    rows = [f"| {name} | {ours[name]:.2f} | {theirs[name]:.2f} |" for name in ours]
    redis = project.client()
    before = redis.info("memory")["used_memory"]
    ask(project, 1000)
    per_symbol = (redis.info("memory")["used_memory"] - before) / 1000
    rows.append(f"| Redis memory per finished symbol (job hash, result stream, registries), KB | {per_symbol / 1024:.1f} | |")
    return rows


def scaling_and_memory(project: Project, scratch: str) -> list[str]:
    """Notes: 2 vs 1 worker on 1000 symbols, end to end (a second system with one worker, alternating) and the
    fleet alone (draining queued jobs, alternating), and worker memory over 10,000 jobs."""
    os.makedirs(os.path.join(scratch, "one-worker"))
    single = Project(os.path.join(scratch, "one-worker"), workers=1, name="one worker")
    try:
        ask(single, 50)
        times = side_by_side([project, single], 1000)
    finally:
        single.stop()
    two, one = times["project"], times["one worker"]
    drains: dict[int, list[float]] = {2: [], 1: []}
    for _ in range(RUNS):
        for workers in drains:
            drains[workers].append(drain(project, workers))
    project.start_workers(2)
    ask(project, 50)
    pids = project.pids()["worker"]
    before = [rss_mb(pid) for pid in pids]
    for _ in range(10):
        ask(project, 1000)
    after = [rss_mb(pid) for pid in pids]
    ratio = statistics.median(one) / statistics.median(two)
    return [f"- 2 workers vs 1 on 1000 symbols, end to end, alternating: **{ratio:.2f}×** "
            f"the throughput (1 worker {spread(one)} s, 2 workers {spread(two)} s; the web app and Redis share the 2 cores)",
            f"- 2 workers vs 1, the fleet alone: 1000 jobs queued, then fresh workers, first start to last end, alternating: "
            f"**{statistics.median(drains[1]) / statistics.median(drains[2]):.2f}×** (1 worker {spread(drains[1])} s, "
            f"2 workers {spread(drains[2])} s; Redis shares the cores, the web app is idle)",
            "- worker memory over 10,000 jobs (RSS): " +
            ", ".join(f"{b:.0f} → {a:.0f} MB" for b, a in zip(before, after))]


def high_availability(project: Project, scratch: str) -> list[str]:
    """Notes: 1000 symbols on a Sentinel group (`make run HA=1`'s, shipped settings) against the single Redis,
    alternating, and the time from the primary's kill -9 to the first request answered in full."""
    group, parts = SentinelGroup(Path(scratch) / "sentinel-group"), []
    try:
        parts.append(Workers(group.url, os.path.join(scratch, "group-workers.log"), Config.WORKERS, **CHANGED))
        parts.append(WebServer(group.url, os.path.join(scratch, "group-web.log"), WEB_PROCESSES=Config.WEB_PROCESSES,
                               **CHANGED))
        system = System("group", parts[-1].url, group.servers[0])
        ask(system, 50)
        times = side_by_side([project, system], 1000)
        primary = group.primary_server()
        primary.process.kill()
        killed = time.monotonic()
        while True:
            try:
                answer(system, 1)
                break
            except (AssertionError, OSError):  # 503 until the web app and workers reach the new primary
                assert time.monotonic() - killed < 120, "no request was answered within 120 s of the failover"
                time.sleep(0.05)
        outage = time.monotonic() - killed
    finally:
        for part in reversed(parts):
            part.stop()
        group.stop()
    ratio = statistics.median(times["group"]) / statistics.median(times["project"])
    return [f"- 1000 symbols on a Sentinel group (three servers, three sentinels; each claim, each job's start and "
            f"each answer's reads acknowledged by a replica) against a single Redis, alternating: **{ratio:.2f}×** the time "
            f"(group {spread(times['group'])} s, single {spread(times['project'])} s)",
            f"- the primary killed (kill -9) to the first request answered in full: **{outage:.1f} s** "
            f"(SENTINEL_DOWN_AFTER_MS {Config.SENTINEL_DOWN_AFTER_MS})"]


def io_bound(project: Project) -> str:
    """Note: 100 symbols whose fetch takes 200 ms each, on IO_WORKERS workers, against the ideal time."""
    project.start_workers(IO_WORKERS, SYNTHETIC_LATENCY_MS=int(IO_LATENCY * 1000))
    ask(project, IO_WORKERS)
    times = side_by_side([project], 100, runs=max(RUNS, 5))["project"]  # the noisiest case: more runs
    ideal = 100 / IO_WORKERS * IO_LATENCY
    pss = statistics.median(rss_mb(pid, "Pss") for pid in project.pids()["worker"])
    return (f"- I/O-bound, 100 symbols × {IO_LATENCY * 1000:.0f} ms fetch on {IO_WORKERS} workers: {spread(times)} s, "
            f"{statistics.median(times) / ideal:.2f}× the ideal {ideal:.1f} s; {pss:.0f} MB PSS per worker")


def report() -> str:
    """Run every case and return the Markdown report."""
    loop = statistics.median(plain_loop(1000) for _ in range(RUNS))
    with tempfile.TemporaryDirectory() as scratch:
        systems: list[System] = []
        try:
            systems.append(project := Project(scratch))
            systems.append(peer := Peer(scratch, os.environ.get("BENCH_PEER_PYTHON") or sys.executable))
            for system in systems:
                ask(system, 50)  # warm up every process
            table = compare(project, peer)
            cost_rows = costs(project, peer)
            peer.stop()  # the remaining cases are the project's alone
            notes = [one_symbol_phases(project), past_the_threshold(project), bulk_start(project),
                     *scaling_and_memory(project, scratch), *high_availability(project, scratch), io_bound(project)]
        finally:
            for system in systems:
                system.stop()
    return "\n".join([
        f"# `make bench` on this machine ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}", "",
        "The project runs its shipped defaults except: " + ", ".join(f"`{k}={v}`" for k, v in CHANGED.items())
        + ". The peer runs as its README says (Celery concurrency 2, Flask's threaded server, no `nice`).", "",
        "| case | project | Celery peer | project / peer |", "| --- | ---: | ---: | ---: |", *table, "",
        "| per 1000 symbols | project | Celery peer |", "| --- | ---: | ---: |", *cost_rows, "",
        f"- plain loop, one process, no queue: {loop:.3f} s for 1000 symbols (the floor)", *notes, ""])


def main() -> None:
    """Print the report; keep it in bench/last-run.md, and in bench/results.md with --save."""
    text = report()
    print(text)
    for path, wanted in (("last-run.md", True), ("results.md", "--save" in sys.argv)):
        if wanted:
            with open(os.path.join(ROOT, "bench", path), "w") as out:
                out.write(text)


if __name__ == "__main__":
    main()

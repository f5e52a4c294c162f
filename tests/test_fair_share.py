"""Fair share of the fleet between clients (issue 29): real gunicorn, real workers, clients on their own addresses."""
import threading

from rq.job import Job

from jobs.fair import staged_queues, waiting
from jobs.job_class import SERIALIZER, trends_queues
from jobs.records import current_job_key, trading_day, work_id
from tests.conftest import WebServer, analysis_jobs, post_from, wait_until
from webapp import create_app

FLOODER, OTHER = "127.0.0.2", "127.0.0.3"
WORKERS = 2


def test_a_flooding_client_holds_back_anothers_symbol_by_about_one_job_per_worker(redis_server, redis_client,
                                                                                 start_workers, tmp_path):
    """The issue's case, scaled: 2 workers at 200 ms a symbol; one address queues 600 symbols as 20-symbol analyses."""
    start_workers(redis_server.url, WORKERS, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=200)
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic")
    try:
        flood = []
        for n in range(30):
            status, created, _ = post_from(FLOODER, web.url, "/api/analyses", {"symbols": [f"F{n}S{i}" for i in range(20)]})
            assert status == 202, created
            flood.append(created["id"])
        interactive = trends_queues(redis_client, create_app({"REDIS_URL": redis_server.url}).config)[0]
        staged = [queue.name for queue in staged_queues(redis_client, interactive)]
        assert staged == [f"{interactive.name}@{FLOODER}"], "the flood waits in its client's own queue, by name"
        depth, oldest = waiting(redis_client, interactive)
        assert depth > 500 and oldest > 0, "and is counted as waiting, with its age (/healthz, /metrics, admission)"
        # Its own symbol, and one the flood queued last: a shared job waits in the turn of whoever asks.
        status, answer, _ = post_from(OTHER, web.url, "/get_trends", {"symbols": ["OTHER", "F29S19"]})
    finally:
        web.stop()
    assert status == 200 and answer["status"] == "success", answer

    other = Job.fetch(redis_client.get(current_job_key(work_id("OTHER", 20, 5, "trend", 0.8, trading_day(),
                                                                   "synthetic"))).decode(),
                      connection=redis_client, serializer=SERIALIZER)
    flooded = [job for analysis in flood for job in analysis_jobs(redis_client, analysis)]
    ahead = [job for job in flooded if job.started_at and other.enqueued_at < job.started_at < other.started_at]
    assert len(ahead) <= WORKERS + 1, f"{len(ahead)} of the flood's jobs started while the other client's waited"
    waiting_flood = sum(1 for job in flooded if job.get_status(refresh=True) == "queued")
    assert waiting_flood > 300, "the other client was served while most of the flood still waited"


def test_a_client_alone_gets_the_whole_fleet(redis_server, redis_client, start_workers, tmp_path):
    """Turns cost an idle fleet nothing: one client's staged jobs are taken as fast as they come, and the turns empty."""
    start_workers(redis_server.url, WORKERS, PRICE_SOURCE="synthetic")
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic")
    try:
        status, answer, _ = post_from(OTHER, web.url, "/get_trends", {"symbols": [f"ALONE{i}" for i in range(20)]})
    finally:
        web.stop()
    assert status == 200 and answer["status"] == "success", answer
    interactive = trends_queues(redis_client, create_app({"REDIS_URL": redis_server.url}).config)[0]
    wait_until(lambda: not staged_queues(redis_client, interactive), what="the client's turn to end with its jobs")
    assert redis_client.sismember(interactive.redis_queues_keys, f"rq:queue:{interactive.name}@{OTHER}") == 0, \
        "an emptied client queue leaves rq-dashboard's list"


def test_a_flooder_asking_for_anothers_symbols_does_not_pull_them_behind_its_backlog(redis_server, redis_client,
                                                                                    start_workers, tmp_path):
    """A shared job moves into the asker's turn only where it starts sooner: never deeper into a flood."""
    start_workers(redis_server.url, WORKERS, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=200)
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic")
    mine = [f"MINE{i}" for i in range(5)]
    answers = []
    try:
        for n in range(30):
            assert post_from(FLOODER, web.url, "/api/analyses", {"symbols": [f"F{n}S{i}" for i in range(20)]})[0] == 202
        asker = threading.Thread(target=lambda: answers.append(post_from(OTHER, web.url, "/get_trends",
                                                                         {"symbols": mine})))
        asker.start()
        interactive = trends_queues(redis_client, create_app({"REDIS_URL": redis_server.url}).config)[0]
        wait_until(lambda: any(queue.name.endswith(OTHER) for queue in staged_queues(redis_client, interactive)),
                   what="the other client's jobs to wait in its turn")
        assert post_from(FLOODER, web.url, "/api/analyses", {"symbols": mine})[0] == 202  # the flooder asks for them too
        asker.join()
    finally:
        web.stop()
    status, answer, _ = answers[0]
    assert status == 200 and answer["status"] == "success", answer


def test_a_symbol_another_client_queued_in_bulk_waits_in_the_askers_turn(redis_server, redis_client, start_workers,
                                                                         tmp_path):
    """Work ids do not name the queue: a small request joining a job still queued in bulk moves it into its turn."""
    start_workers(redis_server.url, WORKERS, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=200)
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic")
    try:
        for n in range(30):
            assert post_from(FLOODER, web.url, "/api/analyses", {"symbols": [f"F{n}S{i}" for i in range(20)]})[0] == 202
        bulk = {"symbols": ["VICTIM", *(f"B{i}" for i in range(20))]}  # 21 symbols: the bulk queue, behind every turn
        assert post_from(FLOODER, web.url, "/api/analyses", bulk)[0] == 202
        status, answer, _ = post_from(OTHER, web.url, "/get_trends", {"symbols": ["VICTIM"]})
    finally:
        web.stop()
    assert status == 200 and answer["status"] == "success", answer

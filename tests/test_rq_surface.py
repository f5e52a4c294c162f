"""What the worker takes from inside RQ (docs/architecture.md "Inside RQ"): each fails by name when an upgrade changes it."""
import inspect
import os
import subprocess
import sys

import pytest
import rq.callbacks
import rq.job_lifecycle
from rq import SimpleWorker, worker_registration
from rq.defaults import DEFAULT_JOB_CLASS, DEFAULT_SERIALIZER_CLASS
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat, utcparse
from rq.worker import DequeueStrategy

from config import ROOT, Config
from jobs.job_class import SERIALIZER, TrendsJob
from jobs.records import rq_time
from jobs.worker import TrendsWorker
from tests.conftest import wait_until, waiting_job_ids, worker_of

# RQ's worker steps the project's worker replaces or wraps, with the parameters it relies on (docs/architecture.md).
HOOKS = {
    "work": ["burst", "logging_level", "date_format", "log_format", "max_jobs", "max_idle_time", "with_scheduler",
             "dequeue_strategy"],
    "dequeue_job_and_maintain_ttl": ["timeout", "max_idle_time"],
    "execute_job": ["job", "queue"],
    "prepare_job_execution": ["job", "remove_from_intermediate_queue"],
    "handle_execution_ended": ["job", "queue", "heartbeat_ttl"],
    "handle_job_success": ["job", "queue", "started_job_registry", "execution"],
    "handle_job_failure": ["job", "queue", "started_job_registry", "exc_string", "execution"],
    "handle_exception": ["job", "exc_info"],
    "cleanup_execution": ["job", "pipeline", "execution"],
    "clean_registries": [],
    "run_maintenance_tasks": [],
    "register_birth": [],
    "heartbeat": ["timeout", "pipeline"],
    "set_state": ["state", "pipeline"],
    "check_for_suspension": ["burst"],
    "teardown": [],
    "set_shutdown_requested_date": [],
    "serialize": [],
}
# RQ's private methods the worker calls, with the parameters it passes.
PRIVATE_CALLS = {
    (Job, "_handle_success"): ["result_ttl", "pipeline", "worker_name", "execution_id", "execution_started_at",
                               "execution_ended_at"],
    (Job, "_handle_failure"): ["exc_string", "pipeline", "worker_name", "execution_id", "execution_started_at",
                               "execution_ended_at"],
}
# RQ's private attributes the worker and job class read or write.
WORKER_ATTRIBUTES = ["_state", "_stop_requested", "_stopped_job_id", "_exc_handlers", "executions", "last_cleaned_at"]
JOB_ATTRIBUTES = ["_success_callback_name", "_failure_callback_name", "_stopped_callback_name"]


def parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


@pytest.mark.parametrize("hook", HOOKS)
def test_each_rq_worker_step_we_replace_keeps_its_signature(hook):
    assert hasattr(SimpleWorker, hook), f"RQ's worker no longer has {hook}(): the project's worker replaces it"
    assert parameters(getattr(SimpleWorker, hook)) == HOOKS[hook], (
        f"RQ's {hook}() changed its parameters: jobs/fenced_worker.py, jobs/recovery.py and jobs/worker.py "
        "override it (docs/architecture.md, 'Inside RQ')")


@pytest.mark.parametrize(("owner", "name"), PRIVATE_CALLS)
def test_each_private_rq_method_we_call_keeps_its_signature(owner, name):
    assert hasattr(owner, name), f"RQ's {owner.__name__}.{name} is gone: the worker stores outcomes with it"
    assert parameters(getattr(owner, name)) == PRIVATE_CALLS[(owner, name)], (
        f"RQ's {owner.__name__}.{name}() changed its parameters (docs/architecture.md, 'Inside RQ')")


def test_each_private_rq_attribute_we_use_is_still_there(app, client):
    worker = worker_of(app)
    for name in WORKER_ATTRIBUTES:
        assert hasattr(worker, name), f"RQ's worker no longer has {name} (docs/architecture.md, 'Inside RQ')"
    client.post("/api/analyses", json={"symbols": ["AAPL"]})
    job = app.interactive_queue.fetch_job(waiting_job_ids(app.redis, app.interactive_queue)[0])
    for name in JOB_ATTRIBUTES:
        assert hasattr(job, name), f"RQ's job no longer has {name}: jobs/job_class.py reads it to refuse foreign code"
    assert StartedJobRegistry.parse_job_id("a-job:an-execution") == "a-job", "the reaper parses RQ's registry entries"


def test_the_public_rq_names_our_loop_and_reaper_rely_on_are_still_there():
    assert isinstance(SimpleWorker.dequeue_timeout, property), "RQ's dequeue_timeout (the socket timeout) changed"
    assert parameters(rq.job_lifecycle.record_job_failure) == ["job", "exc_string", "pipeline"], (
        "rq.job_lifecycle.record_job_failure changed: the fenced reaper records a lost job's failure with it")
    assert parameters(rq.job_lifecycle.call_exception_handlers) == ["handlers", "job", "exc_info"], (
        "rq.job_lifecycle.call_exception_handlers changed: the reaper runs the worker's handlers with it")
    assert parameters(worker_registration.register) == ["worker", "pipeline"], "RQ's worker_registration.register changed"
    assert isinstance(Queue.registry_cleaning_key, property), "RQ's Queue.registry_cleaning_key changed"
    assert parameters(rq.callbacks.execute_failure_callback) == ["job", "death_penalty_class", "exc_info"], (
        "rq.callbacks.execute_failure_callback changed: the reaper runs a lost job's failure callback with it")


def test_redis_py_pipelines_still_keep_their_commands_where_we_read_them(app):
    pipe = app.redis.pipeline(transaction=False)
    pipe.set("a", 1)
    assert [args for args, _ in pipe.command_stack] == [("SET", "a", 1)], (
        "redis-py's Pipeline.command_stack changed: jobs/records.py `recorded` reads RQ's writes from it")


def test_rqs_documented_worker_options_work_or_are_refused_by_name(app):
    worker = worker_of(app)
    with pytest.raises(ValueError, match="dequeue strategy .* is not supported"):
        worker.work(dequeue_strategy=DequeueStrategy.RANDOM)
    with pytest.raises(ValueError, match="with_scheduler is not supported"):
        worker.work(with_scheduler=True)
    assert worker.work(max_idle_time=1, logging_level="WARNING") is False, "idle past max_idle_time: it stops"
    with pytest.raises(ValueError, match="disable_default_exception_handler is not supported"):
        TrendsWorker(app.queues, connection=app.redis, disable_default_exception_handler=True)
    # RQ's CLI passes its own job class and serializer unless told otherwise: the project's are used instead.
    for job_class in (None, Job, DEFAULT_JOB_CLASS, "jobs.job_class.TrendsJob"):
        assert TrendsWorker(app.queues, connection=app.redis, job_class=job_class).job_class is TrendsJob
    for serializer in (None, DEFAULT_SERIALIZER_CLASS, "json", JSONSerializer, "rq.serializers.JSONSerializer",
                       "jobs.job_class.OrjsonSerializer", "jobs.job_class.SERIALIZER"):
        assert TrendsWorker(app.queues, connection=app.redis, serializer=serializer).serializer is SERIALIZER
    with pytest.raises(ValueError, match="job class .* is not supported: this worker runs jobs.job_class.TrendsJob"):
        TrendsWorker(app.queues, connection=app.redis, job_class=type("Other", (Job,), {}))
    with pytest.raises(ValueError, match="serializer 'pickle' is not supported: jobs and results are JSON"):
        TrendsWorker(app.queues, connection=app.redis, serializer="pickle")


def test_rqs_exception_handlers_run_for_every_failure_not_for_a_success(app, client, run_jobs):
    handled = []  # run_jobs: synthetic prices in this process
    client.post("/api/analyses", json={"symbols": ["AAPL", "NOPE1"]})  # NOPE…: unknown to the synthetic source
    TrendsWorker(app.queues, connection=app.redis, lost_after=3,
                 exception_handlers=[lambda job, *exc: handled.append((job.args[0], exc[0].__name__))]
                 ).work(burst=True, logging_level="WARNING")
    assert ("NOPE1", "UnknownSymbolError") in handled and len(handled) == 1, handled


def test_rq_worker_command_with_the_project_worker_class_runs_only_the_projects_jobs(redis_server, redis_client, tmp_path):
    """`rq worker -w jobs.worker.TrendsWorker`, as RQ documents custom worker classes, with RQ's default options."""
    marker = tmp_path / "pwned"
    queue = Queue(Config.INTERACTIVE_QUEUE, connection=redis_client, serializer=JSONSerializer)
    foreign = queue.enqueue("os.system", f"touch {marker}")
    ours = queue.enqueue("jobs.tasks.analyze_symbol", "AAPL", 20, 5)
    rq_command = os.path.join(os.path.dirname(sys.executable), "rq")
    done = subprocess.run([rq_command, "worker", "-w", "jobs.worker.TrendsWorker", "--burst", "-u", redis_server.url,
                           Config.INTERACTIVE_QUEUE], cwd=ROOT, env=dict(os.environ, PRICE_SOURCE="synthetic"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert foreign.get_status(refresh=True) == "failed" and not marker.exists(), "RQ's default job class ran foreign code"
    assert ours.get_status(refresh=True) == "finished" and ours.return_value()["symbol"] == "AAPL"


def test_result_ttl_zero_keeps_no_result_as_in_rq(app, run_jobs):
    job = app.interactive_queue.enqueue("jobs.tasks.analyze_symbol", "AAPL", 20, 5, result_ttl=0)
    run_jobs(app)
    wait_until(lambda: not app.redis.exists(job.key), timeout=2, what="the job to be gone with its result")
    assert not job.results()



def test_the_web_app_reads_rqs_times_as_rq_writes_them():
    moment = now()
    assert rq_time(utcformat(moment).encode()) == moment.timestamp() == utcparse(utcformat(moment)).timestamp(), (
        "RQ's utcformat changed: jobs/records.py rq_time reads RQ's times in job hashes as ISO 8601")

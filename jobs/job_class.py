"""The project's queues and job class: workers import only the project's own job functions.

RQ imports and calls whatever dotted path a job in Redis names, so anyone able to write to Redis
could otherwise run code on every worker. Used for running jobs and for RQ's registry maintenance
(which calls failure callbacks).
"""
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import rq.serializers
from redis import Redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer, Serializer
from rq.types import FailureCallbackType, SuccessCallbackType

from jobs.records import JOB_STATS_KEY

log = logging.getLogger(__name__)

ANALYZE_SYMBOL = "jobs.tasks.analyze_symbol"  # the job the web app enqueues, by name
JOB_FUNCTIONS = frozenset({ANALYZE_SYMBOL})  # all a worker will import and call


class RefusedJobError(Exception):
    """A job named something other than the project's job functions; nothing it named was imported."""


class TrendsJob(Job):
    """An RQ Job that imports only JOB_FUNCTIONS: any other function, method or callback is refused before import.

    Used by the workers for running jobs and for RQ's registry maintenance (which calls failure callbacks).
    """

    @property
    def func(self) -> Callable[..., Any]:
        """Import the job's function only if the job names nothing but ours."""
        self._refuse_foreign_code()
        return super().func

    @property
    def success_callback(self) -> SuccessCallbackType | None:
        """Refuse the job before RQ imports a success callback it names (ours name none)."""
        self._refuse_foreign_code()
        return super().success_callback

    @property
    def failure_callback(self) -> FailureCallbackType | None:
        """Refuse the job before RQ imports a failure callback it names (ours name none)."""
        self._refuse_foreign_code()
        return super().failure_callback

    @property
    def stopped_callback(self) -> Callable[[Job, Redis], Any] | None:
        """Refuse the job before RQ imports a stopped callback it names (ours name none)."""
        self._refuse_foreign_code()
        return super().stopped_callback

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        """Send no webhooks (we use none): a job planted with some must not make workers send requests anywhere."""
        # Recorded, not raised: RQ calls this after a failure is stored, in loops a raise would cut short.
        if self.webhooks:
            try:
                self._refuse_foreign_code()
            except RefusedJobError:
                pass

    def _refuse_foreign_code(self) -> None:
        """Raise RefusedJobError, after recording it on the job and in the counts, if it names anything not ours."""
        func_name = self.func_name
        ours = isinstance(func_name, str) and func_name in JOB_FUNCTIONS and self.instance is None
        named = [] if ours else [func_name]
        named += [name for name in (self._success_callback_name, self._failure_callback_name,
                                    self._stopped_callback_name) if name]
        named += [f"a webhook to {webhook.url}" for webhook in self.webhooks]
        if not named:
            return
        error = RefusedJobError(f"refused to run {', '.join(map(repr, named))}: workers run only "
                                f"{', '.join(sorted(JOB_FUNCTIONS))}")
        if "error" not in self.meta:  # once per job, whichever path (run, clean-up) got here first
            log.warning("job %s from queue %s: %s", self.id, self.origin, error)
            self.meta["error"], self.meta["reason"] = f"{self.id}: {error}", "refused"
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, "meta", SERIALIZER.dumps(self.meta))
                pipe.hincrby(JOB_STATS_KEY, f"{self.origin}:refused", 1)
                pipe.execute()
        raise error


class OrjsonSerializer(Serializer):
    """RQ's JSON serializer, written and read by orjson: the same JSON (rq-dashboard reads it), far faster for floats.

    Non-finite numbers are written as null (standard JSON has no Infinity); what RQ's own JSONSerializer
    wrote with Infinity or NaN in it is still read. Used as one instance of a declared subclass of RQ's
    Serializer protocol (SERIALIZER): RQ checks the protocol for every job, result and registry it
    builds, ~8 a job, and on Python 3.11 an instance passes in half the time a class does (10 → 5 µs).
    """

    @staticmethod
    def dumps(obj: Any) -> bytes:
        """Encode a job's arguments, meta or result as JSON."""
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

    @staticmethod
    def loads(data: bytes | str) -> Any:
        """Decode JSON that RQ stored."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)  # Python's json module's extensions: Infinity, NaN


SERIALIZER = OrjsonSerializer()  # every job, meta and result: JSON, never pickle
# RQ names a worker's serializer by its module and qualified name (to import it again): this instance's.
SERIALIZER.__qualname__ = "SERIALIZER"
SERIALIZER_PATH = f"{__name__}.SERIALIZER"


def trends_queues(connection: Redis, settings: Mapping[str, Any]) -> list[Queue]:
    """Build the interactive and bulk queues, in the order workers take from them (RQ takes from the first non-empty)."""
    return [Queue(settings[name], connection=connection, serializer=SERIALIZER, job_class=TrendsJob)
            for name in ("INTERACTIVE_QUEUE", "BULK_QUEUE")]


def never_unpickle() -> None:
    """Make JSON RQ's fallback serializer in this process.

    RQ unpickles wherever a caller passes no serializer (rq-dashboard's job and worker views,
    Worker.all's current jobs), so a pickle planted in Redis would otherwise run code here.
    """
    rq.serializers.PickleSerializer = JSONSerializer
    rq.serializers.SERIALIZER_ALIASES["pickle"] = JSONSerializer

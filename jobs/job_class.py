"""The job class workers use: it imports only the project's own job functions.

RQ imports and calls whatever dotted path a job in Redis names, so anyone able to write to Redis
could otherwise run code on every worker. Used for running jobs and for RQ's registry maintenance
(which calls failure callbacks).
"""
from rq.job import Job

ANALYZE_SYMBOL = "jobs.tasks.analyze_symbol"  # the job the web app enqueues, by name
JOB_FUNCTIONS = frozenset({ANALYZE_SYMBOL})  # all a worker will import and call


class RefusedJobError(Exception):
    """A job named something other than the project's job functions; nothing it named was imported."""


class TrendsJob(Job):
    """An RQ Job that imports only JOB_FUNCTIONS: any other function, method or callback is refused before import.

    Used by the workers for running jobs and for RQ's registry maintenance (which calls failure callbacks).
    """

    @property
    def func(self):
        self._refuse_foreign_code()
        return super().func

    @property
    def success_callback(self):
        self._refuse_foreign_code()
        return super().success_callback

    @property
    def failure_callback(self):
        self._refuse_foreign_code()
        return super().failure_callback

    @property
    def stopped_callback(self):
        self._refuse_foreign_code()
        return super().stopped_callback

    def _refuse_foreign_code(self) -> None:
        named = [self.func_name] if self.func_name not in JOB_FUNCTIONS or self.instance is not None else []
        named += [name for name in (self._success_callback_name, self._failure_callback_name,
                                    self._stopped_callback_name) if name]
        if named:
            raise RefusedJobError(f"refused to run {', '.join(map(repr, named))}: workers run only "
                                  f"{', '.join(sorted(JOB_FUNCTIONS))}")

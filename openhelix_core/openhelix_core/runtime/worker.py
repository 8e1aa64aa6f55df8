"""Model calls on a thread of their own, so that a robot process never waits for a model.

A node's executor thread serves the e-stop, the watchdogs and the command stream; a System 1
call on CPU takes up to a second and a LLaVA call on CPU half a minute. :class:`LatestOnlyWorker`
runs such calls on a dedicated thread: the node submits a job, goes on serving its callbacks,
and takes the result when the worker says it is ready. Only the newest job matters: a job
submitted while another waits replaces it, and :meth:`LatestOnlyWorker.discard` makes the
result of the job in flight vanish (after a deactivation or an e-stop nothing computed before
may be executed). torch releases the GIL inside its kernels, so the executor keeps running.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

Job = TypeVar("Job")
Output = TypeVar("Output")


@dataclass(frozen=True)
class WorkerResult(Generic[Job, Output]):
    """What one job gave: ``output``, or the exception it raised (``error``), and how long it took."""

    job: Job
    output: Output | None
    error: Exception | None
    duration_s: float


class LatestOnlyWorker(Generic[Job, Output]):
    """Runs ``compute(job)`` on its own thread for the newest submitted job.

    ``on_ready`` is called on the worker thread after each result is stored; it must only
    wake the owner (e.g. trigger a ROS guard condition), who then calls :meth:`take_result`.
    """

    def __init__(self, compute: Callable[[Job], Output], on_ready: Callable[[], None], name: str) -> None:
        self._compute = compute
        self._on_ready = on_ready
        self._condition = threading.Condition()
        self._pending: Job | None = None
        self._running = False
        self._result: WorkerResult | None = None
        self._generation = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A job waits or runs."""
        with self._condition:
            return self._pending is not None or self._running

    def submit(self, job: Job) -> None:
        """Queues ``job``, replacing one that has not started."""
        with self._condition:
            if self._stopped:
                raise RuntimeError("the worker was stopped")
            self._pending = job
            self._condition.notify()

    def take_result(self) -> WorkerResult | None:
        """The newest result not taken yet, or None."""
        with self._condition:
            result, self._result = self._result, None
            return result

    def discard(self) -> None:
        """Forgets the waiting job, the untaken result, and the result of the job now running."""
        with self._condition:
            self._pending = None
            self._result = None
            self._generation += 1

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Discards everything and ends the thread; returns False if a running call outlasted
        ``timeout_s`` (it finishes in the background and its result is dropped)."""
        with self._condition:
            self._stopped = True
            self._pending = None
            self._result = None
            self._generation += 1
            self._condition.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                job, self._pending = self._pending, None
                generation, self._running = self._generation, True
            started = time.perf_counter()
            output, error = None, None
            try:
                output = self._compute(job)
            except Exception as exception:  # handed to the owner, who reports it
                error = exception
            with self._condition:
                self._running = False
                if generation != self._generation:
                    continue
                self._result = WorkerResult(job, output, error, time.perf_counter() - started)
            self._on_ready()

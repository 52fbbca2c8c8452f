"""One generation worker per device: a thread that owns the pipeline and runs jobs one at a time
from a bounded queue, with A1111's progress / interrupt / skip state for the job it is running.

Requests are asyncio handlers; a job's result reaches its handler through an asyncio future set
from the worker thread (call_soon_threadsafe). A job whose client went away is cancelled: dropped
if still queued, stopped at the next sampler step if running.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..sampling.denoiser import Interrupted


class QueueFull(Exception):
    def __init__(self, retry_after: int, waiting: int):
        super().__init__(f"the generation queue is full ({waiting} jobs waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    pass


class Cancelled(Exception):
    """The job was cancelled (its client disconnected) before it produced a result."""


@dataclass
class Job:
    """A unit of work for the worker thread: `run(job, worker)` returns the result."""
    kind: str
    run: Callable[["Job", "GenerationWorker"], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    started: Optional[float] = None
    # controls, set from request handlers, read by the worker between sampler steps
    interrupted: bool = False
    skipped: bool = False
    cancelled: bool = False
    # progress, written by the worker
    job_count: int = 1
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    preview_wanted: bool = False
    current_image: Optional[str] = None

    def should_stop(self) -> bool:
        return self.interrupted or self.cancelled

    def should_skip(self) -> bool:
        """True once per /skip: the current batch ends, the job goes on."""
        if self.skipped:
            self.skipped = False
            return True
        return False

    def on_step(self, info: dict) -> None:
        passes = 2 if "hires_pass" in info else 1  # A1111 counts a hires job's passes as jobs
        self.job_no = int(info.get("iteration", 0)) * passes + int(info.get("hires_pass", 0))
        self.job_count = int(info.get("n_iter", self.job_count)) * passes
        self.sampling_step = int(info["i"]) + 1
        self.sampling_steps = int(info["total"])

    def progress(self) -> float:
        """A1111's: 0.01 + job_no / job_count + sampling_step / sampling_steps / job_count, at most 1."""
        if self.started is None:
            return 0.0
        p = 0.01 + self.job_no / self.job_count
        if self.sampling_steps:
            p += self.sampling_step / self.sampling_steps / self.job_count
        return min(p, 1.0)


class GenerationWorker:
    """The thread that owns `state` (the loaded pipeline and its name) and runs jobs in order."""

    def __init__(self, state: Any, *, max_queue: int = 8):
        if max_queue < 1:
            raise ValueError(f"max_queue={max_queue}; must be >= 1")
        self.state = state
        self.max_queue = max_queue
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.current: Optional[Job] = None
        self._durations: deque[float] = deque(maxlen=20)
        self._thread = threading.Thread(target=self._loop, name="sdrt-generation-worker", daemon=True)

    # --- request side -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, kind: str, run: Callable[[Job, "GenerationWorker"], Any]) -> Job:
        """Queue a job from the event loop's thread; raises QueueFull when max_queue jobs wait."""
        loop = asyncio.get_running_loop()
        job = Job(kind, run, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            waiting = sum(1 for j in self._queue if not j.cancelled)
            if waiting >= self.max_queue:
                raise QueueFull(self._retry_after(waiting), waiting)
            self._queue.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client is gone: drop the job if it waits, stop it at the next step if it runs."""
        job.cancelled = True
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                _deliver(job, cancel=True)

    def queue_length(self) -> int:
        with self._cond:
            return sum(1 for j in self._queue if not j.cancelled)

    def interrupt(self) -> None:
        job = self.current
        if job is not None:
            job.interrupted = True

    def skip(self) -> None:
        job = self.current
        if job is not None:
            job.skipped = True

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish the queued jobs, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _retry_after(self, waiting: int) -> int:
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 1.0
        return max(1, math.ceil(typical * (waiting + 1)))

    # --- worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                self.current = job
            job.started = time.monotonic()
            try:
                result = job.run(job, self)
            except Interrupted:
                _deliver(job, cancel=True)
            except BaseException as e:  # delivered to the request that asked; the worker goes on
                _deliver(job, exc=e)
            else:
                _deliver(job, cancel=True) if job.cancelled else _deliver(job, result=result)
            finally:
                self._durations.append(time.monotonic() - job.started)
                with self._cond:
                    self.current = None


def _deliver(job: Job, *, result: Any = None, exc: Optional[BaseException] = None, cancel: bool = False) -> None:
    def settle():
        if job.future.done():
            return
        if cancel:
            job.future.cancel()
        elif exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the event loop is closed: nobody is waiting any more
        pass

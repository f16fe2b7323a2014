"""Run one claimed job in this process and leave it in a final state, whatever happens.

The job kinds are a fixed table of this package's functions: a job row names its kind,
never code to import. A kind's function ends a successful job itself (training does it in
the transaction that registers the version); every other ending is written here.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from importlib import import_module
from typing import Any

from fineloop.config import Settings
from fineloop.errors import FineloopError
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.tasks.base import JobCancelled, ProgressSink

log = logging.getLogger("fineloop.jobs")

JobFunction = Callable[[Store, Settings, int, ProgressSink], dict[str, Any]]
KINDS: dict[str, str] = {jobs.TRAIN: "fineloop.jobs.train:run_training"}


class Terminated(BaseException):
    """A signal arrived while the job ran: unwind and record why. `cancel` says the user
    meant to stop it (Ctrl-C in the foreground); otherwise a requested cancel decides."""

    def __init__(self, reason: str, *, cancel: bool = False) -> None:
        super().__init__(reason)
        self.cancel = cancel


def job_function(kind: str) -> JobFunction:
    target = KINDS.get(kind)
    if target is None:
        raise FineloopError(f"unknown job kind {kind!r} (known: {', '.join(KINDS)})")
    module, _, name = target.partition(":")
    function: JobFunction = getattr(import_module(module), name)
    return function


def execute(store: Store, settings: Settings, job_id: int, sink: ProgressSink) -> str:
    """Run a job that is in state running (claimed by the caller); returns its final state."""
    with store.read() as session:
        job = jobs.get_job(session, job_id)
        kind, state = job.kind, job.state
    if state != jobs.RUNNING:
        raise FineloopError(f"job {job_id} is {state}, not running; claim it first")
    outcome: tuple[str, str, str | None] | None = None
    try:
        job_function(kind)(store, settings, job_id, sink)
    except JobCancelled:
        outcome = (jobs.CANCELLED, "cancelled", None)
    except Terminated as stop:
        if stop.cancel or _cancel_requested(store, job_id):
            outcome = (jobs.CANCELLED, "cancelled", None)
        else:
            outcome = (jobs.FAILED, "", str(stop) or "terminated")
    except Exception as error:
        if _cancel_requested(store, job_id):  # a task's own way of stopping on cancel
            outcome = (jobs.CANCELLED, "cancelled", None)
        elif isinstance(error, FineloopError):
            outcome = (jobs.FAILED, "", error.message)
        else:
            log.exception("job %s failed", job_id)
            sink.log(traceback.format_exc()[-4000:])
            outcome = (jobs.FAILED, "", f"{type(error).__name__}: {error}")
    finally:
        _close(sink)
    if outcome is not None:
        state, message, error_text = outcome
        with store.write() as session:
            jobs.finish(
                session, job_id, state, message or f"failed: {error_text}", error=error_text
            )
    with store.read() as session:
        return jobs.get_job(session, job_id).state


def _cancel_requested(store: Store, job_id: int) -> bool:
    """Asked afresh: a sink's cached answer may be up to its interval old."""
    with store.read() as session:
        return jobs.cancel_requested(session, job_id)


def _close(sink: ProgressSink) -> None:
    close = getattr(sink, "close", None)
    if callable(close):
        close()

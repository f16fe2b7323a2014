"""Run one claimed job in this process and leave it in a final state, whatever happens.

The job kinds are a fixed table of functions: this package's, plus those installed packages
add under the `fineloop.jobs` entry point group. A job row names its kind, never code to
import. A kind's function returns the job's result; the runner then ends the job as
succeeded, unless the function ended it itself (training does, in the transaction that
registers the version). Every other ending is written here, for the attempt it ran as.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from collections.abc import Callable
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.errors import FineloopError
from fineloop.jobs import store as jobs
from fineloop.jobs.checkpoint_mirror import delete_mirror, mirrors
from fineloop.store import Store
from fineloop.store.schema import Job, Project
from fineloop.tasks.base import JobCancelled, ProgressSink

log = logging.getLogger("fineloop.jobs")

JobFunction = Callable[[Store, Settings, int, ProgressSink], dict[str, Any]]
KINDS: dict[str, str] = {jobs.TRAIN: "fineloop.jobs.train:run_training"}
KINDS[jobs.SEARCH] = "fineloop.jobs.search:run_search"
KINDS[jobs.BUILD_SNAPSHOT] = "fineloop.jobs.kinds:run_build_snapshot"
KINDS[jobs.EVALUATE] = "fineloop.jobs.kinds:run_evaluation"
PLUGINS = "fineloop.jobs"


class Terminated(BaseException):
    """A signal arrived while the job ran: unwind and record why. `cancel` says the user
    meant to stop it (Ctrl-C in the foreground); otherwise a requested cancel decides.
    `leave` says a worker sent it and will record the ending (fail, or queue again)."""

    def __init__(self, reason: str, *, cancel: bool = False, leave: bool = False) -> None:
        super().__init__(reason)
        self.cancel = cancel
        self.leave = leave


@cache
def plugin_kinds() -> dict[str, str]:
    """Kind -> 'module:attribute' from installed packages, without importing them."""
    return {ep.name: ep.value for ep in entry_points(group=PLUGINS) if ep.name not in KINDS}


def known_kinds() -> list[str]:
    return sorted({*KINDS, *plugin_kinds()})


def job_function(kind: str) -> JobFunction:
    target = KINDS.get(kind) or plugin_kinds().get(kind)
    if target is None:
        raise FineloopError(f"unknown job kind {kind!r} (known: {', '.join(known_kinds())})")
    module, _, name = target.partition(":")
    function: JobFunction = getattr(import_module(module), name)
    return function


def runs_in_process(kind: str) -> bool:
    """Whether a worker may run this kind in its own process instead of a child process:
    only a plugin kind whose function says `in_process = True` (quick, and unable to take
    the worker down). Built-in kinds load the ML stack, so they always get a child."""
    if kind in KINDS:
        return False
    return bool(getattr(job_function(kind), "in_process", False))


def job_folder(settings: Settings, project: str, job_id: int) -> Path:
    """The job's own scratch folder, the same on every attempt: a retried training job
    finds its checkpoints there. Removed once the job ends (`clear_scratch`)."""
    return artifacts.root(settings) / project / "tmp" / f"job{job_id}"


def clear_scratch(store: Store, settings: Settings, job_id: int) -> None:
    """Remove what the job's runs left under the project's tmp folder."""
    with store.read() as session:
        job = session.get(Job, job_id)
        project = session.get(Project, job.project_id) if job is not None else None
    if project is None:
        return
    folder = job_folder(settings, project.name, job_id)
    for path in [folder, *folder.parent.glob(f"{folder.name}-*")]:
        shutil.rmtree(path, ignore_errors=True)
    try:
        delete_mirror(settings, project.name, job_id)
    except Exception:  # the store is unreachable: the mirror stays, harmless
        log.exception("could not delete the checkpoint mirror of job %s", job_id)


def sweep_scratch(store: Store, settings: Settings) -> list[int]:
    """Clear the scratch folders, and on a URL root the checkpoint mirrors, of every job
    that has ended (a job cancelled while queued for a retry leaves them behind); returns
    those jobs' ids."""
    found: dict[int, list[Path]] = {}
    for path in artifacts.root(settings).glob("*/tmp/job*"):
        digits = path.name[3:].partition("-")[0]
        if digits.isdigit():
            found.setdefault(int(digits), []).append(path)
    try:
        mirrored = mirrors(settings)
    except Exception:  # the store is unreachable: sweep it another time
        log.exception("could not list the checkpoint mirrors")
        mirrored = {}
    candidates = set(found) | set(mirrored)
    if not candidates:
        return []
    with store.read() as session:
        active = select(Job.id).where(Job.id.in_(candidates), Job.state.in_(jobs.ACTIVE))
        keep = set(session.scalars(active))
    ended = sorted(candidates - keep)
    for job_id in ended:
        for path in found.get(job_id, []):
            shutil.rmtree(path, ignore_errors=True)
        for project in mirrored.get(job_id, []):
            try:
                delete_mirror(settings, project, job_id)
            except Exception:
                log.exception("could not delete the checkpoint mirror of job %s", job_id)
    return ended


def execute(store: Store, settings: Settings, job_id: int, sink: ProgressSink) -> str:
    """Run a job that is in state running (claimed by the caller); returns its state after
    (`running` only when a worker's stop signal left the ending to that worker)."""
    with store.read() as session:
        job = jobs.get_job(session, job_id)
        kind, state, attempt = job.kind, job.state, job.attempts
    if state != jobs.RUNNING:
        raise FineloopError(f"job {job_id} is {state}, not running; claim it first")
    outcome: tuple[str, str, str | None] | None = None
    result: dict[str, Any] | None = None
    try:
        result = job_function(kind)(store, settings, job_id, sink)
        summary = result.get("summary") if isinstance(result, dict) else None
        outcome = (jobs.SUCCEEDED, summary if isinstance(summary, str) else "succeeded", None)
    except JobCancelled:
        outcome = (jobs.CANCELLED, "cancelled", None)
    except Terminated as stop:
        if stop.cancel or _cancel_requested(store, job_id):
            outcome = (jobs.CANCELLED, "cancelled", None)
        elif not stop.leave:
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
        _end(store, job_id, attempt, outcome, result)
    with store.read() as session:
        final = jobs.get_job(session, job_id).state
    if final in jobs.FINISHED:
        clear_scratch(store, settings, job_id)
    return final


def _end(
    store: Store,
    job_id: int,
    attempt: int,
    outcome: tuple[str, str, str | None],
    result: dict[str, Any] | None,
) -> None:
    """Write the ending unless the job already has one (training ends itself)."""
    state, message, error = outcome
    with store.write() as session:
        if state != jobs.SUCCEEDED:
            jobs.finish(
                session, job_id, state, message or f"failed: {error}", error=error, attempt=attempt
            )
        elif not jobs.finish(session, job_id, state, message, result=result, attempt=attempt):
            # still running means a cancel arrived as it finished: that wins
            jobs.finish(session, job_id, jobs.CANCELLED, "cancelled", attempt=attempt)


def _cancel_requested(store: Store, job_id: int) -> bool:
    """Asked afresh: a sink's cached answer may be up to its interval old."""
    with store.read() as session:
        return jobs.cancel_requested(session, job_id)


def _close(sink: ProgressSink) -> None:
    close = getattr(sink, "close", None)
    if callable(close):
        close()

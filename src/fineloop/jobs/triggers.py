"""Training that starts by itself: after N new feedback events, or on a schedule.

A project's `TrainingPolicy.trigger` says when. "New qualifying feedback" is the project's
feedback whose stored |reward| reaches the reward policy's `quality_threshold` (what the
dataset builders keep), and that is newer than the last training job: newer than the
feedback watermark of that job's snapshot, or, for a job that built none, received after
the job was created. Failed jobs count as training too, so a broken setup waits for N new
events instead of retrying in a loop.

Never two training jobs of one project: the decision is taken again, and the job created,
in ONE write transaction that first locks the project row (`SELECT ... FOR UPDATE` on
PostgreSQL; SQLite's BEGIN IMMEDIATE serializes writers), and `create_job` refuses while a
training job is active. Each triggered job records why, in `config["trigger"]` and as its
second event ("trigger: 50 new feedback events since job 12").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from fineloop.data import read_project
from fineloop.errors import FineloopError
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.store.projects import policy_of, training_policy_of
from fineloop.store.schema import Feedback, Job, Project, Snapshot
from fineloop.tasks import get_task

log = logging.getLogger("fineloop.triggers")
MIN_GAP = 1.0
ROLLOUT_EVERY = 60.0  # seconds between periodic rollout policy runs


@dataclass(frozen=True)
class Due:
    """Why a project should train now."""

    rule: str  # "feedback_count" or "interval"
    reason: str
    new_feedback: int
    since_job: int | None


def _last_training(session: Session, project_id: int) -> Job | None:
    """The newest job that trains a version (a training job, or a search's)."""
    kinds = jobs.EXCLUSIVE.get(jobs.TRAIN, (jobs.TRAIN,))
    query = select(Job).where(Job.project_id == project_id, Job.kind.in_(kinds))
    return session.scalar(query.order_by(Job.id.desc()).limit(1))


def _new_feedback(session: Session, project: Project, last: Job | None) -> Select[Any]:
    threshold = policy_of(project).quality_threshold
    query = select(Feedback.received_at).where(
        Feedback.project_id == project.id, func.abs(Feedback.reward) >= threshold
    )
    if last is None:
        return query
    watermark = None
    if last.snapshot_id is not None:
        watermark = session.scalar(
            select(Snapshot.feedback_watermark).where(Snapshot.id == last.snapshot_id)
        )
    if watermark is not None:
        return query.where(Feedback.id > watermark)
    return query.where(Feedback.received_at > last.created_at)


def due(session: Session, project: Project, now: datetime) -> Due | None:
    """Whether the project's trigger policy asks for a training job at `now`."""
    trigger = training_policy_of(project).trigger
    if trigger.feedback_count is None and trigger.interval_minutes is None:
        return None
    last = _last_training(session, project.id)
    if last is not None and last.state in jobs.ACTIVE:
        return None
    debounce = timedelta(seconds=trigger.debounce_seconds)
    if last is not None and now - last.created_at < debounce:
        return None
    fresh = _new_feedback(session, project, last).subquery()
    count = session.scalar(select(func.count()).select_from(fresh)) or 0
    since = f"since job {last.id}" if last is not None else "since the project was created"
    if trigger.feedback_count is not None and count >= trigger.feedback_count:
        nth = session.scalar(
            select(fresh.c.received_at)
            .order_by(fresh.c.received_at)
            .offset(trigger.feedback_count - 1)
            .limit(1)
        )
        if nth is not None and now - nth >= debounce:
            reason = f"trigger: {count} new feedback events {since}"
            return Due("feedback_count", reason, count, last.id if last else None)
    if trigger.interval_minutes is not None and count > 0:
        start = last.created_at if last is not None else project.created_at
        if now - start >= timedelta(minutes=trigger.interval_minutes):
            reason = (
                f"trigger: schedule every {trigger.interval_minutes} min, "
                f"{count} new feedback events {since}"
            )
            return Due("interval", reason, count, last.id if last else None)
    return None


def fire(store: Store, project_name: str, now: datetime | None = None) -> Job | None:
    """Create the project's training job if its trigger is due; None otherwise.

    Safe to call from any number of processes at once: see the module docstring."""
    now = now or datetime.now(UTC)
    with store.read() as session:
        project = session.scalar(select(Project).where(Project.name == project_name))
        if project is None or due(session, project, now) is None:
            return None
    task = get_task(project.task)
    task.train_config(training_policy_of(project).train)  # a bad policy: Invalid, no job
    task.check_trainable(read_project(store, project))  # too little data: Invalid, no job
    try:
        with store.write() as session:
            session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
            locked = session.get(Project, project.id)
            assert locked is not None
            reason = due(session, locked, now)  # again, now that nobody else can decide
            if reason is None:
                return None
            config = {"overrides": {}, "trigger": asdict(reason)}
            attempts = training_policy_of(locked).max_attempts  # as start_training does
            job = jobs.create_job(session, locked, jobs.TRAIN, config, max_attempts=attempts)
            jobs.add_event(session, job.id, "log", reason.reason, {"trigger": asdict(reason)})
            return job
    except jobs.JobBusy:
        return None


def check_all(store: Store, now: datetime | None = None) -> list[int]:
    """One pass over every project with a trigger; the ids of the jobs it created."""
    with store.read() as session:
        rows = session.execute(select(Project.name, Project.training_policy)).all()
    created: list[int] = []
    for name, policy in rows:
        trigger = (policy or {}).get("trigger") or {}
        if trigger.get("feedback_count") is None and trigger.get("interval_minutes") is None:
            continue
        try:
            job = fire(store, name, now)
        except FineloopError as error:  # not trainable yet (too little data, bad policy)
            log.debug("trigger of %s not fired: %s", name, error.message)
            continue
        if job is not None:
            log.info("project %s: job %s (%s)", name, job.id, job.config["trigger"]["reason"])
            created.append(job.id)
    return created


class TriggerLoop:
    """A daemon thread that checks triggers every `interval` seconds (or when poked) and
    delivers pending webhooks: what `fineloop serve` and `fineloop worker` run.

        loop = TriggerLoop(store, on_job=worker.wake)
        loop.start()
        ...
        loop.stop()
    """

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 5.0,
        webhook_interval: float = 2.0,
        on_job: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.interval, self.webhook_interval = store, interval, webhook_interval
        self.on_job = on_job
        self._stop = threading.Event()
        self._poked = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rollouts_at = time.monotonic()

    def start(self) -> None:
        for target, name in ((self._triggers, "triggers"), (self._webhooks, "webhooks")):
            thread = threading.Thread(target=target, name=f"fineloop-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def poke(self, project: str | None = None) -> None:
        """Check now rather than at the next tick (feedback arrived)."""
        self._poked.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._poked.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def tick(self) -> list[int]:
        """One trigger pass; wakes the worker when it queued something."""
        created = check_all(self.store)
        if created and self.on_job is not None:
            self.on_job()
        return created

    def evaluate_rollouts(self) -> None:
        """Run the rollout policies now and then even when no feedback reaches this process
        (it may arrive through another server); each evaluation locks its rollout row."""
        if time.monotonic() - self._rollouts_at < ROLLOUT_EVERY:
            return
        self._rollouts_at = time.monotonic()
        from fineloop.rollouts.policy import evaluate_all

        evaluate_all(self.store)

    def _triggers(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.evaluate_rollouts()
            except Exception:  # a store hiccup must not end the loop
                log.exception("trigger check failed")
            if self._stop.wait(MIN_GAP):  # pokes at ingest rate: still one check a second
                return
            self._poked.wait(max(0.0, self.interval - MIN_GAP))
            self._poked.clear()

    def _webhooks(self) -> None:
        from fineloop.jobs.webhooks import deliver_pending

        while not self._stop.wait(self.webhook_interval):
            try:
                deliver_pending(self.store, stop=self._stop)
            except Exception:
                log.exception("webhook delivery failed")

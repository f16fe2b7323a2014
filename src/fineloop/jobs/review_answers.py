"""The new candidate's answers to the review queue, recorded by its training job, so the
queue's `disagreement` ranking finds the inputs where champion and candidate part ways
(what reviewing them settles teaches the most).

Only when the project's review queue is ranked by disagreement: it costs one pass of the
candidate over up to `MAX_INPUTS` of the newest interactions without feedback. A family
that cannot answer cheaply (`Task.review_answers` is None: generation) records nothing,
and neither does a failure here, which is logged and costs the job nothing: the queue then
ranks those inputs by uncertainty. The answers are written in the transaction that
registers the version, replacing the previous candidate's: one candidate per project.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from fineloop.feedback.review import unreviewed
from fineloop.store import Store
from fineloop.store.projects import review_policy_of
from fineloop.store.schema import Project, ReviewAnswer, table
from fineloop.tasks.base import ProgressSink, Task

log = logging.getLogger(__name__)
MAX_INPUTS = 2_000


def candidate_answers(
    store: Store, task: Task, project: Project, model: Path, snapshot: Path, sink: ProgressSink
) -> dict[str, Any]:
    """Interaction id -> the candidate's answer, for the queued interactions; {} unless
    the project's queue is ranked by disagreement and the family can answer."""
    policy = review_policy_of(project)
    if policy.ranking != "disagreement":
        return {}
    with store.read() as session:
        rows = unreviewed(session, project.id, min(policy.scan, MAX_INPUTS))
    if not rows:
        return {}
    started = time.perf_counter()
    options = dict(project.task_options or {})
    try:
        answers = task.review_answers(model, snapshot, options, [row.input for row in rows])
    except Exception as error:  # the job's model is registered regardless
        log.exception("review answers of project %s failed", project.name)
        sink.log(f"review: the candidate's answers to the queue failed ({error}); skipped")
        return {}
    if answers is None:
        return {}
    found = {row.id: a for row, a in zip(rows, answers, strict=True) if a is not None}
    seconds = round(time.perf_counter() - started, 3)
    sink.metric("phase_seconds/review", 0, seconds)
    sink.log(f"review: the candidate answered {len(found)} queued inputs in {seconds} s")
    return found


def record_answers(
    session: Session, project_id: int, version: str, answers: dict[str, Any]
) -> None:
    """Replace the project's recorded answers with this version's (none: left as they are)."""
    if not answers:
        return
    answers_table = table(ReviewAnswer)
    session.execute(delete(answers_table).where(answers_table.c.project_id == project_id))
    now = datetime.now(UTC)
    rows = [
        {
            "project_id": project_id,
            "interaction_id": interaction,
            "version": version,
            "answer": answer,
            "recorded_at": now,
        }
        for interaction, answer in answers.items()
    ]
    session.execute(insert(answers_table), rows)

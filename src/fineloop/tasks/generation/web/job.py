"""The job page of a generation training run: which methods ran (SFT, DPO, KTO) on how
many rows, over which steps of the curves, and the held-out replies side by side.

A finished run's adapter folder says what ran (`fineloop_training.json`, written by
`tasks/generation/train.py`); a running one is read from the trainer's log lines
("dpo: 12 rows + 3 replayed", "dpo step 1/9: loss ..."), which the job's events keep.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop import artifacts
from fineloop.store.schema import Job, JobEvent, ModelVersion
from fineloop.tasks.generation.web.project import sample_row

RECORD = "fineloop_training.json"  # tasks.generation.train.RECORD (not imported: torch)
RECORD_BYTES = 1_000_000
ROWS = re.compile(r"^(sft|dpo|kto): (\d+) rows \+ (\d+) replayed$")
STEPS = re.compile(r"^(sft|dpo|kto) step \d+/(\d+):")
METRICS_TITLE = "Reward margin and accuracy (DPO, KTO)"


def job_panel(session: Session, job: Job) -> dict[str, Any]:
    record = training_record(session, job)
    logged = logged_methods(session, job.id)
    methods = record_methods(record) if record else logged
    steps = {m["method"]: m["steps"] for m in logged}
    offset = 0
    stages = []
    for method in methods:
        method["steps"] = steps.get(method["method"])
        if method["steps"]:
            stages.append({"label": method["method"], "first": offset + 1})
            offset += method["steps"]
            stages[-1]["last"] = offset
    metrics = job.result.get("metrics") if isinstance(job.result, dict) else None
    samples = metrics.get("samples") if isinstance(metrics, dict) else None
    return {
        "methods": methods,
        "stages": stages,
        "from_record": record is not None,
        "replay_saved": (record or {}).get("replay_saved"),
        "precision": (record or {}).get("precision"),
        "metrics_title": METRICS_TITLE,
        "samples": [sample_row(s) for s in samples if isinstance(s, dict)]
        if isinstance(samples, list)
        else [],
        "sample_labels": sample_labels(metrics if isinstance(metrics, dict) else {}),
    }


def sample_labels(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Column keys and headings of the side by side: which version each model was."""
    base, champion = metrics.get("base_version", "v0"), metrics.get("champion_version", "?")
    return [
        ("base", f"{base} (base)"),
        ("champion", f"{champion} (champion)"),
        ("candidate", "candidate"),
    ]


def training_record(session: Session, job: Job) -> dict[str, Any] | None:
    """What the trainer wrote next to the adapter of the job's version (local folders
    only: a page never downloads)."""
    version = session.get(ModelVersion, job.version_id) if job.version_id else None
    if version is None or artifacts.is_remote(version.artifact_uri):
        return None
    path = Path(artifacts.local_path(version.artifact_uri)) / RECORD
    try:
        if path.stat().st_size > RECORD_BYTES:
            return None
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def record_methods(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows, replay = _dict(record.get("rows")), _dict(record.get("replay_rows"))
    metrics = _dict(record.get("metrics"))
    return [
        {
            "method": method,
            "rows": rows.get(method),
            "replay_rows": replay.get(method),
            "metrics": _dict(metrics.get(method)),
        }
        for method in record.get("methods") or []
        if isinstance(method, str)
    ]


def logged_methods(session: Session, job_id: int) -> list[dict[str, Any]]:
    """The methods the trainer announced, in order, with their rows and planned steps."""
    announced = session.scalars(
        select(JobEvent.message)
        .where(JobEvent.job_id == job_id, JobEvent.kind == "log")
        .where(JobEvent.message.like("% rows + % replayed"))
        .order_by(JobEvent.id)
        .limit(10)
    ).all()
    methods: list[dict[str, Any]] = []
    for message in announced:
        if (found := ROWS.match(message)) is None:
            continue
        method = found.group(1)
        first = session.scalar(
            select(JobEvent.message)
            .where(JobEvent.job_id == job_id, JobEvent.kind == "log")
            .where(JobEvent.message.like(f"{method} step %"))
            .order_by(JobEvent.id)
            .limit(1)
        )
        planned = STEPS.match(first or "")
        methods.append(
            {
                "method": method,
                "rows": int(found.group(2)),
                "replay_rows": int(found.group(3)),
                "metrics": {},
                "steps": int(planned.group(2)) if planned else None,
            }
        )
    return methods


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}

"""What each dashboard page shows, read straight from the store with the API's own functions.

The pages are rendered on the server from these dicts; the same dicts go into the page as
JSON for the charts, so the browser draws exactly what the tables say.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, func, select
from sqlalchemy.orm import Session

from fineloop.feedback.stats import reward_stats
from fineloop.jobs import store as jobs
from fineloop.registry import manage
from fineloop.registry.versions import CHAMPION
from fineloop.snapshots import list_snapshots, snapshot_public
from fineloop.store.projects import get_project, list_projects, policy_of, project_public
from fineloop.store.schema import Alias, Feedback, Job, JobEvent, ModelVersion, Project
from fineloop.web import families

_MAX_DAYS = 90  # the feedback chart shows at most this many days, the newest


def projects_page(session: Session) -> list[dict[str, Any]]:
    """One row per project: its size, its champion and its latest job."""
    feedback = _pairs(
        session, select(Feedback.project_id, func.count()).group_by(Feedback.project_id)
    )
    versions = _pairs(
        session, select(ModelVersion.project_id, func.count()).group_by(ModelVersion.project_id)
    )
    champions = _pairs(
        session,
        select(Alias.project_id, ModelVersion.number)
        .join(ModelVersion, ModelVersion.id == Alias.version_id)
        .where(Alias.name == CHAMPION),
    )
    rows = []
    for project in list_projects(session):
        latest = session.scalar(
            select(Job).where(Job.project_id == project.id).order_by(Job.id.desc()).limit(1)
        )
        number = champions.get(project.id)
        rows.append(
            {
                "name": project.name,
                "task": project.task,
                "description": project.description,
                "feedback": feedback.get(project.id, 0),
                "versions": versions.get(project.id, 0),
                "champion": None if number is None else f"v{number}",
                "latest_job": None if latest is None else jobs.job_public(session, latest),
                "created_at": project.created_at.isoformat(),
            }
        )
    return rows


def _pairs(session: Session, query: Executable) -> dict[int, int]:
    return {row[0]: row[1] for row in session.execute(query)}


def project_page(session: Session, name: str, page: int = 1) -> dict[str, Any]:
    """Everything the project page shows; NotFound for an unknown project. `page` pages
    the family panel's lists (a generation project's interactions)."""
    project = get_project(session, name)
    stats = reward_stats(session, project.id, policy_of(project), bucket="day")
    versions = manage.versions_public(session, project)
    history = manage.history_public(session, project)
    history.reverse()  # newest first on the page
    return {
        "project": project_public(project).model_dump(mode="json"),
        "stats": stats.model_dump(mode="json"),
        "daily": daily_counts(stats.model_dump()["over_time"]),
        "jobs": [jobs.job_public(session, j) for j in jobs.list_jobs(session, project.id)],
        "versions": [v | {"summary": version_summary(v["metrics"])} for v in versions],
        "matrix": metric_matrix(versions),
        "aliases": manage.aliases_public(session, project),
        "history": history,
        "snapshots": [_snapshot_row(s) for s in _snapshots(session, project)],
        "family": families.project_panel(session, project, page),
    }


def job_page(session: Session, job_id: int) -> dict[str, Any]:
    """A job with its metric series and its latest events (NotFound for an unknown id)."""
    job = jobs.get_job(session, job_id)
    latest = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(200)
    ).all()
    public, series = jobs.job_public(session, job), jobs.metric_series(session, job_id)
    # the family's panel last: a failing one is skipped, after the page's own reads
    family = families.job_panel(session, session.get(Project, job.project_id), job)
    return {
        "job": public,
        "series": series,
        "events": [jobs.event_public(e) for e in reversed(latest)],
        "family": family,
        # steps of each stage of the run (a generation run's methods): the loss chart
        # draws one line per stage
        "stages": (family or {}).get("stages", []),
    }


def daily_counts(over_time: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Daily buckets with the empty days filled in, so the chart's x axis is real time."""
    if not over_time:
        return []
    counts = {row["start"].date(): row for row in over_time}
    last = max(counts)
    first = max(min(counts), last - timedelta(days=_MAX_DAYS - 1))
    days = []
    day = first
    while day <= last:
        row = counts.get(day)
        days.append(
            {
                "day": day.isoformat(),
                "count": row["count"] if row else 0,
                "mean_reward": row["mean_reward"] if row else None,
            }
        )
        day += timedelta(days=1)
    return days


def metric_matrix(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """Offline metrics side by side: the base model, then each trained version, one column
    each, rows = metric names. Each run measured its candidate next to the base and the
    champion of the time on its own held-out split, so the base column is the latest run's."""
    trained = [v for v in versions if isinstance(v["metrics"].get("candidate"), dict)]
    if not trained:
        return {"names": [], "columns": [], "primary": None}
    latest = trained[-1]["metrics"]
    base = _dict(latest.get("base"))
    columns: list[dict[str, Any]] = [
        {"label": f"{latest.get('base_version', 'v0')} (base)", "values": base}
    ]
    for version in trained:
        metrics = version["metrics"]
        columns.append(
            {
                "label": version["version"],
                "aliases": version["aliases"],
                "values": metrics["candidate"],
                "vs_champion": _deltas(metrics["candidate"], metrics.get("champion")),
                "vs_base": _deltas(metrics["candidate"], metrics.get("base")),
                "champion_version": metrics.get("champion_version"),
            }
        )
    names = sorted({name for column in columns for name in column["values"]})
    primary = latest.get("primary")
    if primary in names:
        names.remove(primary)
        names.insert(0, primary)
    # The primary metric points the way its evaluation said (a loss: lower is better);
    # the others are read as scores, higher is better.
    lower_primary = latest.get("higher_is_better") is False
    best = {
        name: (min if lower_primary and name == primary else max)(found)
        for name in names
        if (found := [c["values"][name] for c in columns if _is_number(c["values"].get(name))])
    }
    return {"names": names, "columns": columns, "primary": primary, "best": best}


def version_summary(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The primary metric of a trained version and its differences to the champion of the
    time (with the gate's bootstrap interval) and to the base model; None for a base model."""
    primary, candidate = str(metrics.get("primary")), _dict(metrics.get("candidate"))
    if not _is_number(candidate.get(primary)):
        return None
    value = candidate[primary]
    champion, base = _dict(metrics.get("champion")), _dict(metrics.get("base"))
    interval = _dict(metrics.get("interval"))
    return {
        "metric": primary,
        "value": value,
        "vs_champion": value - champion[primary] if _is_number(champion.get(primary)) else None,
        "champion_version": metrics.get("champion_version"),
        "low": interval.get("low") if _is_number(interval.get("low")) else None,
        "high": interval.get("high") if _is_number(interval.get("high")) else None,
        "vs_base": value - base[primary] if _is_number(base.get(primary)) else None,
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _deltas(values: dict[str, float], other: Any) -> dict[str, float]:
    if not isinstance(other, dict):
        return {}
    return {
        k: v - other[k] for k, v in values.items() if _is_number(v) and _is_number(other.get(k))
    }


def _snapshots(session: Session, project: Project) -> list[Any]:
    return list_snapshots(session, project.id)[:50]


def _snapshot_row(row: Any) -> dict[str, Any]:
    public = snapshot_public(row)
    public["bytes"] = _size(row.uri)
    return public


def _size(uri: str) -> int | None:
    """Bytes under a local snapshot folder (None for remote or missing ones)."""
    folder = Path(uri)
    if not folder.is_dir():
        return None
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def ago(moment: str | None, now: datetime | None = None) -> str:
    """'3 min ago' for an ISO time: the tables' time column."""
    if not moment:
        return ""
    then = datetime.fromisoformat(moment)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def size_text(count: int | None) -> str:
    if count is None:
        return "—"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def pretty_json(value: Any) -> str:
    """A policy as the Policies panel's textarea shows it: indented JSON, key order kept
    (the template escapes it, so a `<` in a value stays text)."""
    return json.dumps(value, indent=2, ensure_ascii=False)

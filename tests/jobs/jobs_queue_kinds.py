"""Job kinds for queue tests, installed the way a plugin adds one: a `fineloop.jobs` entry
point (a dist-info folder on the path), so standalone `fineloop worker` processes find them.

`record` appends one line per execution to the file its job names, so a test can count how
often each job ran. It is light (`in_process`), so workers run it in their own process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fineloop.config import Settings
from fineloop.jobs import runner
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.tasks.base import ProgressSink

HERE = Path(__file__).resolve().parent
RECORD = "record"


def record(store: Store, settings: Settings, job_id: int, sink: ProgressSink) -> dict[str, Any]:
    with store.read() as session:
        job = jobs.get_job(session, job_id)
    time.sleep(float(job.config.get("seconds", 0.0)))
    line = f"{job_id} {job.attempts} {job.worker}\n"
    # one small write to a file opened for appending: lines from several processes never mix
    fd = os.open(job.config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return {"pid": os.getpid(), "summary": f"recorded by {job.worker}"}


record.in_process = True  # type: ignore[attr-defined]


@pytest.fixture
def queue_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install `record` as job kind "record", here and for child processes."""
    site = tmp_path / "kinds-site"
    info = site / "fineloop_queue_kinds-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fineloop-queue-kinds\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[fineloop.jobs]\n{RECORD} = jobs_queue_kinds:record\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(HERE))
    paths = [str(site), str(HERE), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    runner.plugin_kinds.cache_clear()
    yield
    runner.plugin_kinds.cache_clear()


def executions(log: Path) -> list[tuple[int, int, str]]:
    """(job id, attempt, worker) per execution recorded in `log`."""
    if not log.exists():
        return []
    rows = [line.split(" ", 2) for line in log.read_text().splitlines()]
    return [(int(job), int(attempt), worker) for job, attempt, worker in rows]

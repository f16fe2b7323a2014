"""Helpers for tests against a live `fineloop serve`: the fake task's server, SSE reading.

The stream reader here parses the wire format itself (not with the CLI's parser), so the
tests check the server's bytes, not one parser against itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import LiveServer
from fineloop.config import Settings

FINAL = ("succeeded", "failed", "cancelled")
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def server(settings: Settings, fake_plugin: None) -> Iterator[LiveServer]:
    """`fineloop serve` whose job processes find the fake task."""
    running = LiveServer(settings)
    yield running
    running.stop()


@dataclass(frozen=True)
class Sse:
    id: str | None
    event: str
    data: Any


def sse_messages(lines: Iterator[str], raw: list[str] | None = None) -> Iterator[Sse]:
    fields: dict[str, str] = {}
    for line in lines:
        if raw is not None:
            raw.append(line)
        if line == "":
            if "data" in fields:
                yield Sse(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def read_stream(
    url: str,
    job_id: int,
    headers: dict[str, str] | None = None,
    *,
    stop_after: int | None = None,
    query: str = "",
    raw: list[str] | None = None,
) -> list[Sse]:
    """Messages of one connection, until the server ends it (or `stop_after` messages)."""
    found: list[Sse] = []
    with httpx.stream(
        "GET",
        f"{url}/v1/jobs/{job_id}/events{query}",
        headers=SSE | (headers or {}),
        timeout=httpx.Timeout(10, read=30),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in sse_messages(response.iter_lines(), raw):
            found.append(message)
            if stop_after is not None and len(found) >= stop_after:
                break
    return found


def rows(messages: list[Sse]) -> list[tuple[str, int]]:
    """The stored rows a stream delivered, as (table, row id): events and metric points."""
    return [
        ("metric" if m.event == "metric" else "event", int(m.data["id"]))
        for m in messages
        if m.event != "progress"
    ]


def by_table(messages: list[Sse]) -> dict[str, list[int]]:
    """Row ids per table in the order received: each table's order is exact (by id), the
    interleaving of the two is by write time and may differ between connections."""
    found: dict[str, list[int]] = {"event": [], "metric": []}
    for table, row_id in rows(messages):
        found[table].append(row_id)
    return found


def states(messages: list[Sse]) -> list[str]:
    return [m.data["data"]["state"] for m in messages if m.event == "state"]


def queue_job(url: str, project: str, **overrides: object) -> int:
    response = httpx.post(
        f"{url}/v1/projects/{project}/train", json={"overrides": overrides}, timeout=30
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def job(url: str, job_id: int) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    return found


def wait_state(
    url: str, job_id: int, wanted: tuple[str, ...], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := job(url, job_id))["state"] not in wanted:
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    return found


def wait_progress(url: str, job_id: int, timeout: float = 60) -> None:
    """Until the trainer reported a step (so the job runs, past building its snapshot)."""
    deadline = time.monotonic() + timeout
    while job(url, job_id)["progress"] <= 0.15:
        assert time.monotonic() < deadline
        time.sleep(0.1)

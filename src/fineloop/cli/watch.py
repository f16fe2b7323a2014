"""`fineloop jobs watch ID`: follow a job's event stream on a running server.

The stream (`GET /v1/jobs/{id}/events`, Server-Sent Events) carries the job's progress,
log lines, state changes and metric points. When the connection drops, the watcher
reconnects with `Last-Event-ID` and receives only what it missed; it gives up after
`retry_for` seconds without a connection. The stream ends once the job is final.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Message:
    """One server-sent event: its name, its id (the stream position) and JSON data."""

    event: str
    id: str | None
    data: Any


def parse(lines: Iterator[str]) -> Iterator[Message]:
    """Server-Sent Events from text lines (comments and `retry:` skipped)."""
    event, ident, data = "message", None, list[str]()
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield Message(event, ident, value)
            event, ident, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value


class Unreachable(Exception):
    """The server could not be reached (at first, or for longer than `retry_for`)."""


def state_of(message: Message) -> str | None:
    """The job state a message reports, if any."""
    if not isinstance(message.data, dict):
        return None
    if message.event == "state":
        found = (message.data.get("data") or {}).get("state")
        return str(found) if found else None
    if message.event == "progress":
        return str(message.data.get("state") or "") or None
    return None


def follow(
    url: str,
    job_id: int,
    on_message: Callable[[Message], None],
    *,
    api_key: str | None = None,
    retry_for: float = 60.0,
    on_reconnect: Callable[[str], None] | None = None,
) -> str:
    """Feed the job's messages to `on_message` until it is final; returns the final state.

    Raises `Unreachable`, or `httpx.HTTPStatusError` for a refusal (404, 401, ...)."""
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    endpoint = f"{url.rstrip('/')}/v1/jobs/{job_id}/events"
    last_id: str | None = None
    state: str | None = None
    failing_since: float | None = None
    connected = False
    while True:
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            timeout = httpx.Timeout(10.0, read=60.0)  # keep-alives come every 15 s
            with httpx.stream("GET", endpoint, headers=headers, timeout=timeout) as response:
                if response.status_code == 204:  # resumed after the end: nothing left
                    return state or "unknown"
                if response.is_error:
                    response.read()
                    response.raise_for_status()
                connected, failing_since = True, None
                for message in parse(response.iter_lines()):
                    if message.id is not None:
                        last_id = message.id
                    state = state_of(message) or state
                    on_message(message)
            if state in FINISHED:
                return state
            why = "the server ended the stream before the job ended"
        except httpx.TransportError as error:
            if not connected:
                raise Unreachable(f"cannot reach {url}: {error}") from error
            why = f"connection lost ({type(error).__name__})"
        now = time.monotonic()
        failing_since = failing_since or now
        if now - failing_since > retry_for:
            raise Unreachable(f"no connection to {url} for {retry_for:.0f} s; giving up")
        if on_reconnect is not None:
            on_reconnect(why)
        time.sleep(min(5.0, 0.5 + (now - failing_since) / 4))


def fetch_job(url: str, job_id: int, api_key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{url.rstrip('/')}/v1/jobs/{job_id}", headers=headers, timeout=10.0)
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found

"""The feedback calls of `Client`: send one event or many, and read them back."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fineloop.sdk import events as build
from fineloop.sdk.transport import FineloopError, Transport, project_path


class FeedbackCalls:
    _t: Transport
    batch_size: int

    def send_feedback(self, project: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """Store one event; the answer has its `id`, `created` (False for a repeated
        idempotency key) and `reward`. Events with an idempotency key are retried."""
        keyed = bool(event.get("idempotency_key"))
        path = f"{project_path(project)}/feedback"
        return self._t.obj("POST", path, body=event, idempotent=keyed)

    def send_feedback_batch(
        self, project: str, events: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Store many events, at most `batch_size` per request, each request all or nothing.

        Answers `ids` (in order), `created` and `duplicates`. If a later request is refused,
        the earlier ones stay stored; the error's row numbers count from the first event."""
        rows = list(events)
        ack: dict[str, Any] = {"ids": [], "created": 0, "duplicates": 0}
        path = f"{project_path(project)}/feedback/batch"
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            keyed = all(row.get("idempotency_key") for row in chunk)
            try:
                answer = self._t.obj("POST", path, body={"events": chunk}, idempotent=keyed)
            except FineloopError as error:
                raise _shifted(error, start) from None
            ack["ids"] += answer["ids"]
            ack["created"] += answer["created"]
            ack["duplicates"] += answer["duplicates"]
        return ack

    def thumb(self, project: str, interaction_id: str, up: bool, **extra: Any) -> dict[str, Any]:
        return self.send_feedback(project, build.thumb(interaction_id, up, **extra))

    def rating(
        self, project: str, interaction_id: str, value: float, **extra: Any
    ) -> dict[str, Any]:
        return self.send_feedback(project, build.rating(interaction_id, value, **extra))

    def selection(
        self,
        project: str,
        interaction_id: str,
        selected: Iterable[str],
        rejected: Iterable[str] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        event = build.selection(interaction_id, selected, rejected, **extra)
        return self.send_feedback(project, event)

    def correct(
        self, project: str, interaction_id: str, output: Any, **extra: Any
    ) -> dict[str, Any]:
        return self.send_feedback(project, build.correction(interaction_id, output, **extra))

    def list_feedback(
        self, project: str, page_size: int = 1000, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every stored event matching the filters (kind, user_id, interaction_id, since,
        until, min_reward, max_reward, trainable), oldest first, fetched page by page."""
        path = f"{project_path(project)}/feedback"
        yield from self._t.pages(path, {"limit": page_size, **filters})

    def get_feedback(self, project: str, feedback_id: int) -> dict[str, Any]:
        return self._t.obj("GET", f"{project_path(project)}/feedback/{int(feedback_id)}")


def _shifted(error: FineloopError, offset: int) -> FineloopError:
    """The error of the request holding events from `offset` on, numbered for the whole
    list, and saying that the events before it were stored."""
    if not offset:
        return error
    body = dict(error.body)
    message = f"{error.message} (the {offset} events before were stored)"
    rows = [r | {"row": int(r.get("row", 0)) + offset} for r in error.invalid_rows]
    if rows:
        body["invalid_rows"] = rows
        first = rows[0]
        message = (
            f"{len({r['row'] for r in rows})} invalid row(s) from row {offset} on, whose "
            f"request stored nothing; the {offset} events before were stored. "
            f"First: row {first['row']}, {first.get('field')}: {first.get('message')}"
        )
    body["message"] = message
    return FineloopError(error.status, error.code, message, body)

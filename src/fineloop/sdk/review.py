"""The review-queue calls of `Client`: served interactions nobody gave feedback on yet, the
ones whose review teaches the model most first. Answer one with an ordinary feedback call
(`select`-style `selection`, `thumb`, `label`, ...) on its `interaction_id`, or rewrite it
(`review_rewrite`, in the format its `edit.hint` gives); it then leaves the queue."""

from __future__ import annotations

from typing import Any, Literal

from fineloop.sdk.transport import Transport, project_path, segment

Ranking = Literal["uncertainty", "disagreement", "random", "recent"]


class ReviewCalls:
    _t: Transport

    def review_queue(
        self,
        project: str,
        *,
        limit: int | None = None,
        ranking: Ranking | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """One page of the queue: `items` (each with `interaction`, `score`, `reason`,
        `disagrees_with`, `edit`: how it may be rewritten, or None), `next_offset` (pass
        it as `offset` for the next page; None at the end), `ranking` used. `ranking` and
        `limit` (at most 500) default to the project's `review_policy`."""
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        if ranking is not None:
            params["ranking"] = ranking
        return self._t.obj("GET", f"{project_path(project)}/review", params=params)

    def review_rewrite(
        self,
        project: str,
        interaction_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Answer a queued interaction with rewritten text (a reply as it should have been,
        NER spans as `TYPE: text` lines, the right item ids one per line: its `edit.hint`
        says which). Stored as the ordinary event it makes; answers `id`, `created` and
        `reward` like `send_feedback`. Retried when keyed."""
        body: dict[str, Any] = {"text": text}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if user_id is not None:
            body["user_id"] = user_id
        path = f"{project_path(project)}/review/{segment(interaction_id)}"
        return self._t.obj("POST", path, body=body, idempotent=idempotency_key is not None)

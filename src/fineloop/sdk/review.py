"""The review-queue calls of `Client`: served interactions nobody gave feedback on yet, the
ones whose review teaches the model most first. Answer one with an ordinary feedback call
(`select`-style `selection`, `thumb`, `label`, ...) on its `interaction_id`; it then leaves
the queue."""

from __future__ import annotations

from typing import Any, Literal

from fineloop.sdk.transport import Transport, project_path

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
        `disagrees_with`), `next_offset` (pass it as `offset` for the next page; None at
        the end), `ranking` used. `ranking` and `limit` (at most 500) default to the
        project's `review_policy`."""
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        if ranking is not None:
            params["ranking"] = ranking
        return self._t.obj("GET", f"{project_path(project)}/review", params=params)

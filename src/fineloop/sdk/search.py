"""The serving calls of `Client`: search, select and the score calibration.

`search` and `select` log an interaction on the server and answer its `interaction_id`;
attach the user's answer to it (`client.selection`, `client.thumb`, `client.send_feedback`).
They are not retried once sent (a repeat would log the interaction twice), except after a
503 with Retry-After (the index or model is not ready; nothing was logged): those are sent
again after the pause the server asks for, until the client's timeout.

`select` picks items for a request ("select the walls"); `selection` (a feedback call)
stores what the user kept and turned down on that interaction:

    answer = client.select("bim", "select the walls", threshold=0.6)
    client.selection("bim", answer["interaction_id"], ["wall-1"], rejected=["door-2"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fineloop.sdk.transport import Transport, project_path


class SearchCalls:
    _t: Transport

    def search(
        self,
        project: str,
        query: str,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        version: str | int | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """The k best items for `query` (each with `id`, `text`, `metadata`, `rank`, raw
        cosine `score` and calibrated `probability`), the `interaction_id` to attach
        feedback to, and the `model_version` that answered. `filters` is equality on item
        metadata (a list value matches any of its values); `version` a number or alias."""
        body = _request(query, filters, version, user_id) | {"k": k}
        return self._t.obj("POST", f"{project_path(project)}/search", body=body)

    def select(
        self,
        project: str,
        query: str,
        threshold: float | None = None,
        max: int | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        version: str | int | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """The items whose acceptance probability reaches `threshold` (default: the
        project's serving_policy.select_threshold), at most `max`, as `items`; `candidates`
        adds the next best ones (each with `selected`), which is what the interaction
        records as shown. Store the user's answer with `selection(...)`."""
        body = _request(query, filters, version, user_id)
        if threshold is not None:
            body["threshold"] = threshold
        if max is not None:
            body["max"] = max
        return self._t.obj("POST", f"{project_path(project)}/select", body=body)

    def index_status(self, project: str) -> dict[str, Any]:
        """The project's indexes on the server: per version `state` (queued, loading_model,
        indexing, ready, failed, not_built), `items_indexed` of `items_total`, `seconds`."""
        return self._t.obj("GET", f"{project_path(project)}/index")

    def build_index(self, project: str, version: str | int | None = None) -> dict[str, Any]:
        """Start building the version's index (default: the champion) in the background;
        answers `index_status`. Searches wait for it (up to the client's timeout) anyway."""
        path = f"{project_path(project)}/index"
        return self._t.obj("POST", path, params={"version": version}, idempotent=True)

    def calibration(self, project: str, version: str | int | None = None) -> dict[str, Any]:
        """The score calibration the version (default: champion) serves with: `method`
        (default, platt or isotonic), `params`, `samples`, `fitted_at`."""
        path = f"{project_path(project)}/calibration"
        return self._t.obj("GET", path, params={"version": version})

    def refit_calibration(self, project: str, version: str | int | None = None) -> dict[str, Any]:
        """Refit the calibration on every judged shown item now, and serve with it."""
        path = f"{project_path(project)}/calibration"
        return self._t.obj("POST", path, params={"version": version}, idempotent=True)


def _request(
    query: str,
    filters: Mapping[str, Any] | None,
    version: str | int | None,
    user_id: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if filters:
        body["filters"] = dict(filters)
    if version is not None:
        body["version"] = str(version)
    if user_id is not None:
        body["user_id"] = user_id
    return body

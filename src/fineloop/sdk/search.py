"""The serving calls of `Client`: search, select and the score calibration.

`search` and `select` log an interaction on the server and answer its `interaction_id`;
attach the user's answer to it (`client.send_feedback` or the selection form of `select`).
They are not retried once sent: a repeat would log the interaction twice.

`select` has two forms, told apart by its third argument. The serving form picks items
for a request ("select the walls"); the feedback form, which `Client` had first, stores the
user's picks on an interaction:

    answer = client.select("bim", "select the walls", threshold=0.6)
    client.select("bim", answer["interaction_id"], ["wall-1"], rejected=["door-2"])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, overload

from fineloop.sdk.events import selection
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

    @overload
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
    ) -> dict[str, Any]: ...

    @overload
    def select(
        self,
        project: str,
        interaction_id: str,
        selected: Iterable[str],
        rejected: Iterable[str] = (),
        **extra: Any,
    ) -> dict[str, Any]: ...

    def select(self, project: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Serving form `select(project, query, threshold=None, max=None, *, filters,
        version, user_id)`: the items whose acceptance probability reaches `threshold`
        (default: the project's serving_policy.select_threshold), at most `max`, as
        `items`; `candidates` adds the next best ones (each with `selected`), which is what
        the interaction records as shown.

        Feedback form `select(project, interaction_id, selected, rejected=(), **extra)`:
        store a selection event (what the user kept and what they turned down). Chosen
        when the third argument is a list of ids, or `selected` is given by name."""
        if _is_feedback(args, kwargs):
            return self._selection(project, *args, **kwargs)
        return self._select_items(project, *args, **kwargs)

    def _select_items(
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
        body = _request(query, filters, version, user_id)
        if threshold is not None:
            body["threshold"] = threshold
        if max is not None:
            body["max"] = max
        return self._t.obj("POST", f"{project_path(project)}/select", body=body)

    def _selection(
        self,
        project: str,
        interaction_id: str,
        selected: Iterable[str],
        rejected: Iterable[str] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        event = selection(interaction_id, selected, rejected, **extra)
        keyed = bool(event.get("idempotency_key"))
        path = f"{project_path(project)}/feedback"
        return self._t.obj("POST", path, body=event, idempotent=keyed)

    def calibration(self, project: str, version: str | int | None = None) -> dict[str, Any]:
        """The score calibration the version (default: champion) serves with: `method`
        (default, platt or isotonic), `params`, `samples`, `fitted_at`."""
        path = f"{project_path(project)}/calibration"
        return self._t.obj("GET", path, params={"version": version})

    def refit_calibration(self, project: str, version: str | int | None = None) -> dict[str, Any]:
        """Refit the calibration on every judged shown item now, and serve with it."""
        path = f"{project_path(project)}/calibration"
        return self._t.obj("POST", path, params={"version": version}, idempotent=True)


def _is_feedback(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    if "selected" in kwargs or "rejected" in kwargs or "interaction_id" in kwargs:
        return True
    third = args[1] if len(args) > 1 else None
    return third is not None and not isinstance(third, int | float | str)


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

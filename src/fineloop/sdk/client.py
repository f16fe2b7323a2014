"""`Client`: the REST API as Python calls, one method per route.

Answers are the API's JSON as dicts. Large batches are split into requests the server
accepts; writes that cannot store anything twice (keyed feedback, interactions, which get
their ids here, item upserts) are retried on connection errors and 5xx.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from fineloop.sdk.feedback import FeedbackCalls
from fineloop.sdk.files import FileCalls
from fineloop.sdk.generation import GenerationCalls
from fineloop.sdk.models import ModelCalls
from fineloop.sdk.ner import NerCalls
from fineloop.sdk.review import ReviewCalls
from fineloop.sdk.rollouts import RolloutCalls
from fineloop.sdk.search import SearchCalls
from fineloop.sdk.transport import Transport, chunks, project_path, segment

MAX_BATCH = 10_000


class Client(
    SearchCalls,
    GenerationCalls,
    NerCalls,
    FeedbackCalls,
    FileCalls,
    ModelCalls,
    RolloutCalls,
    ReviewCalls,
):
    """Talk to a fineloop server. `api_key` defaults to the FINELOOP_API_KEY variable.

    Every refused call raises `FineloopError` with the server's status, code and message."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = 3,
        backoff: float = 0.25,
        batch_size: int = MAX_BATCH,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("FINELOOP_API_KEY")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.batch_size = batch_size
        self._t = Transport(self.url, key, timeout, retries, backoff)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._t.close()

    def health(self) -> dict[str, Any]:
        return self._t.obj("GET", "/healthz")

    # projects

    def create_project(
        self,
        name: str,
        task: str,
        base_model: str | None = None,
        description: str = "",
        reward_policy: Mapping[str, Any] | None = None,
        task_options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`task_options`: what the task needs (ner: {"entity_types": [...]})."""
        spec: dict[str, Any] = {"name": name, "task": task, "description": description}
        if base_model is not None:
            spec["base_model"] = base_model
        if reward_policy is not None:
            spec["reward_policy"] = reward_policy
        if task_options is not None:
            spec["task_options"] = dict(task_options)
        return self._t.obj("POST", "/v1/projects", body=spec)

    def list_projects(self) -> list[dict[str, Any]]:
        return self._t.array("GET", "/v1/projects")

    def get_project(self, name: str) -> dict[str, Any]:
        return self._t.obj("GET", project_path(name))

    def update_project(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change base_model, description, task_options, training_policy, serving_policy,
        review_policy or reward_policy (which recomputes all rewards)."""
        return self._t.obj("PATCH", project_path(name), body=changes, idempotent=True)

    def stats(self, project: str, bucket: str = "day") -> dict[str, Any]:
        """Counts by kind, a histogram of effective rewards, and a series per hour/day/week."""
        path = f"{project_path(project)}/stats"
        return self._t.obj("GET", path, params={"bucket": bucket})

    # items

    def upsert_items(self, project: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace items (`id`, `text`, optional `metadata`); returns the count."""
        path = f"{project_path(project)}/items"
        total = 0
        for chunk in chunks(list(items), self.batch_size):
            total += int(
                self._t.obj("PUT", path, body={"items": chunk}, idempotent=True)["upserted"]
            )
        return total

    def list_items(
        self, project: str, page_size: int = 1000, *, contains: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item, page by page; with `contains`, those whose id or text holds it."""
        params: dict[str, Any] = {"limit": page_size}
        if contains is not None:
            params["contains"] = contains
        yield from self._t.pages(f"{project_path(project)}/items", params)

    def get_item(self, project: str, item_id: str) -> dict[str, Any]:
        return self._t.obj("GET", f"{project_path(project)}/items/{segment(item_id)}")

    # interactions

    def log_interaction(
        self,
        project: str,
        input: Any,
        output: Any,
        *,
        id: str | None = None,
        model_version: str | None = None,
        variant: str | None = None,
        user_id: str | None = None,
        latency_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Log what the model was given and what the user saw; returns the interaction id
        to attach feedback to. Logging the same `id` again keeps the first record."""
        optional = {
            "id": id,
            "model_version": model_version,
            "variant": variant,
            "user_id": user_id,
            "latency_ms": latency_ms,
            "metadata": metadata,
        }
        interaction = {"input": input, "output": output}
        interaction |= {k: v for k, v in optional.items() if v is not None}
        return self.log_interactions(project, [interaction])[0]

    def log_interactions(
        self, project: str, interactions: Iterable[Mapping[str, Any]]
    ) -> list[str]:
        """Log many interactions; each gets an id here when it has none, so retries are safe."""
        rows = [dict(row) | {"id": row.get("id") or uuid.uuid4().hex} for row in interactions]
        path = f"{project_path(project)}/interactions/batch"
        ids: list[str] = []
        for chunk in chunks(rows, self.batch_size):
            ids += self._t.obj("POST", path, body={"interactions": chunk}, idempotent=True)["ids"]
        return ids

    def list_interactions(
        self, project: str, limit: int = 100, before: Any = None
    ) -> list[dict[str, Any]]:
        """The latest interactions, newest first (`before`: a datetime, to page back)."""
        path = f"{project_path(project)}/interactions"
        return self._t.array("GET", path, params={"limit": limit, "before": before})

    def get_interaction(self, project: str, interaction_id: str) -> dict[str, Any]:
        path = f"{project_path(project)}/interactions/{segment(interaction_id)}"
        return self._t.obj("GET", path)

    # API keys

    def create_key(self, name: str, scope: Literal["ingest", "admin"]) -> dict[str, Any]:
        """A new key; its secret (`key`) is in this answer only. The first key turns
        authentication on: from then on every call needs a key."""
        return self._t.obj("POST", "/v1/keys", body={"name": name, "scope": scope})

    def list_keys(self) -> list[dict[str, Any]]:
        return self._t.array("GET", "/v1/keys")

    def revoke_key(self, key_id: int) -> dict[str, Any]:
        return self._t.obj("DELETE", f"/v1/keys/{int(key_id)}", idempotent=True)

"""The rollout calls of `Client`: split a project's traffic between versions.

Start one with `set_rollout` (the first variant is the control and targets the champion;
weights are relative), send `user_id` with `search`/`select` so each user keeps one variant,
watch `rollout(project)["comparison"]` (p_value, significant, better), and `end_rollout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fineloop.sdk.transport import Transport, project_path


class RolloutCalls:
    _t: Transport

    def rollout(self, project: str) -> dict[str, Any]:
        """The active rollout (else the last that ended): `variants` (name, target, version,
        weight), `policy`, per-variant `metrics`, the `comparison` of the challenger with
        the control, and the `history` of changes with their reasons."""
        return self._t.obj("GET", f"{project_path(project)}/rollout")

    def set_rollout(
        self,
        project: str,
        variants: Sequence[Mapping[str, Any]],
        policy: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Start a rollout, or change the weights or policy of the running one. The first
        variant is the control and targets the champion; weights are relative."""
        body: dict[str, Any] = {"variants": [dict(v) for v in variants]}
        if policy is not None:
            body["policy"] = dict(policy)
        if reason is not None:
            body["reason"] = reason
        return self._t.obj("PUT", f"{project_path(project)}/rollout", body=body, idempotent=True)

    def end_rollout(self, project: str, reason: str | None = None) -> dict[str, Any]:
        """End the active rollout: every request goes to the champion again."""
        path = f"{project_path(project)}/rollout"
        return self._t.obj("DELETE", path, params={"reason": reason}, idempotent=False)

    def evaluate_rollout(self, project: str) -> dict[str, Any]:
        """Run the rollout policy now: {"actions": [...], "rollout": {...}}."""
        return self._t.obj("POST", f"{project_path(project)}/rollout/evaluate")

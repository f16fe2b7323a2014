"""The training and registry calls of `Client`: train, follow jobs, versions, promotion."""

from __future__ import annotations

import time
from typing import Any

from fineloop.sdk.transport import Transport, project_path, segment

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class ModelCalls:
    _t: Transport

    # jobs

    def train(
        self,
        project: str,
        *,
        nproc: int | None = None,
        launcher: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Queue a training job on the server and return it at once (state `queued`).

        Keyword arguments override the training config for this run (epochs=1, loss="cosent");
        `nproc`/`launcher` train on several processes (torchrun or accelerate).
        Raises 409 while the project has a training job queued or running (the error's body
        has its `job_id`), 422 for a bad override or too few examples."""
        body: dict[str, Any] = {"overrides": overrides}
        if nproc is not None:
            body["nproc"] = nproc
        if launcher is not None:
            body["launcher"] = launcher
        return self._t.obj("POST", f"{project_path(project)}/train", body=body)

    def build_snapshot(self, project: str, seed: int | None = None) -> dict[str, Any]:
        """Queue a job that builds and publishes a snapshot of the project's feedback now;
        the finished job's result names it."""
        body = {} if seed is None else {"seed": seed}
        return self._t.obj("POST", f"{project_path(project)}/snapshots/build", body=body)

    def evaluate(
        self, project: str, version: str | int = "champion", snapshot: str | None = None
    ) -> dict[str, Any]:
        """Queue a job that scores a version (number or alias) on a snapshot's test split
        (default: the latest); the finished job's result holds the metrics."""
        body: dict[str, Any] = {"version": str(version)}
        if snapshot is not None:
            body["snapshot"] = snapshot
        return self._t.obj("POST", f"{project_path(project)}/evaluate", body=body)

    def tune(
        self,
        project: str,
        n_trials: int = 10,
        timeout_seconds: float | None = None,
        space: dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Queue a hyperparameter search (Optuna) and return its job at once.

        `space` changes the task's default space by train config key ({"learning_rate":
        {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}, "loss": None}); `options`
        are the other search fields (pruner, sampler, seed, train, enqueue). Its trials are
        jobs of kind `trial`; the best one is registered like a training run. 422 for a bad
        space, 409 while a training or search job of the project is active."""
        body = {"n_trials": n_trials, "timeout_seconds": timeout_seconds, **options}
        body["space"] = space or {}
        return self._t.obj("POST", f"{project_path(project)}/tune", body=body)

    def job(self, job_id: int) -> dict[str, Any]:
        """State, progress, message, error, result and version of a job."""
        return self._t.obj("GET", f"/v1/jobs/{int(job_id)}")

    def jobs(self, project: str, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The project's jobs, newest first."""
        path = f"{project_path(project)}/jobs"
        return self._t.array("GET", path, params={"state": state, "limit": limit})

    def job_metrics(self, job_id: int) -> dict[str, list[dict[str, Any]]]:
        """Metric series by name: [{"step", "value", "at"}, ...]."""
        series: dict[str, list[dict[str, Any]]] = self._t.obj(
            "GET", f"/v1/jobs/{int(job_id)}/metrics"
        )["series"]
        return series

    def job_events(self, job_id: int, after: int = 0) -> list[dict[str, Any]]:
        """State changes and log lines after event id `after`, in order."""
        return self._t.array("GET", f"/v1/jobs/{int(job_id)}/events", params={"after": after})

    def wait(self, job_id: int, timeout: float | None = None, poll: float = 1.0) -> dict[str, Any]:
        """Poll a job until it succeeded, failed or was cancelled; returns it as it ended.

        Raises TimeoutError if it is still going after `timeout` seconds (it keeps running:
        call `cancel_job` to stop it). A failed job is returned, not raised: check `state`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {job['state']} after {timeout} s "
                    f"({job['progress']:.0%}: {job['message']})"
                )
            time.sleep(
                poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            )

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        """Cancel a queued job now, or ask a running one to stop (poll until `cancelled`)."""
        return self._t.obj("POST", f"/v1/jobs/{int(job_id)}/cancel", idempotent=True)

    # snapshots

    def snapshots(self, project: str) -> list[dict[str, Any]]:
        return self._t.array("GET", f"{project_path(project)}/snapshots")

    def snapshot(self, project: str, snapshot_id: str) -> dict[str, Any]:
        return self._t.obj("GET", f"{project_path(project)}/snapshots/{segment(snapshot_id)}")

    # registry

    def versions(self, project: str) -> list[dict[str, Any]]:
        """Every version, v0 (the base model) first, with metrics, gate and aliases."""
        return self._t.array("GET", f"{project_path(project)}/versions")

    def version(self, project: str, ref: str | int) -> dict[str, Any]:
        """One version by number (3 or "v3") or alias ("champion")."""
        return self._t.obj("GET", f"{project_path(project)}/versions/{segment(ref)}")

    def compare(self, project: str, a: str | int, b: str | int) -> dict[str, Any]:
        """Metrics of two versions side by side: `metrics[name]` = {a, b, delta (b - a)}."""
        path = f"{project_path(project)}/versions/compare"
        return self._t.obj("GET", path, params={"a": a, "b": b})

    def promote(
        self, project: str, ref: str | int, force: bool = False, reason: str | None = None
    ) -> dict[str, Any]:
        """Make a version the champion; one that failed the gate needs force=True."""
        body: dict[str, Any] = {"version": str(ref), "force": force}
        if reason is not None:
            body["reason"] = reason
        return self._t.obj("POST", f"{project_path(project)}/promote", body=body)

    def rollback(
        self, project: str, alias: str = "champion", reason: str | None = None
    ) -> dict[str, Any]:
        """Point the alias back at the version it held before its last move."""
        body: dict[str, Any] = {"alias": alias}
        if reason is not None:
            body["reason"] = reason
        return self._t.obj("POST", f"{project_path(project)}/rollback", body=body)

    def aliases(self, project: str) -> dict[str, str]:
        """alias -> version label, e.g. {"champion": "v2", "challenger": "v3"}."""
        rows = self._t.array("GET", f"{project_path(project)}/aliases")
        return {row["alias"]: row["version"] for row in rows}

    def alias_history(self, project: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every alias move, oldest first, with reason and actor."""
        return self._t.array(
            "GET", f"{project_path(project)}/aliases/history", params={"alias": alias}
        )

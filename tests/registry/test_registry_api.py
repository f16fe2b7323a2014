"""The model registry over HTTP: immutable versions, compare, promote, roll back, history."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.config import Settings
from fineloop.registry import manage
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.versions import register_version, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project


class Base:
    def default_base_model(self) -> str:
        return "/models/base"


def evaluated(
    candidate: float, champion: float, base: float, champion_version: str
) -> dict[str, Any]:
    return {
        "primary": "ndcg@10",
        "split": "test",
        "examples": 10,
        "candidate": {"ndcg@10": candidate, "mrr@10": candidate - 0.1},
        "champion": {"ndcg@10": champion, "mrr@10": champion - 0.1},
        "base": {"ndcg@10": base, "mrr@10": base - 0.1},
        "champion_version": champion_version,
        "base_version": "v0",
    }


def gate(passed: bool) -> dict[str, Any]:
    verdict = "lower bound above margin" if passed else "lower bound not above margin"
    return {"passed": passed, "reason": f"ndcg@10: {verdict}", "metric": "ndcg@10", "margin": 0}


@pytest.fixture
def registry(store: Store, project: str) -> str:
    """faq: v0 (base, champion), v1 (passed the gate vs v0), v2 (failed it vs v0)."""
    with store.write() as session:
        found = get_project(session, project)
        v0 = ensure_base_version(session, found, Base())
        for passed, score in ((True, 0.6), (False, 0.45)):
            register_version(
                session,
                found,
                artifact_uri=f"/artifacts/{score}",
                base_model=v0.base_model,
                parent_id=v0.id,
                metrics=evaluated(score, 0.5, 0.5, "v0"),
                gate=gate(passed),
            )
    return project


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def champion(client: TestClient, project: str) -> str:
    return ok(client.get(f"/v1/projects/{project}/versions/champion"))["version"]


def test_versions_list_and_resolve_by_number_or_alias(client: TestClient, registry: str) -> None:
    listed = ok(client.get(f"/v1/projects/{registry}/versions"))
    assert [v["version"] for v in listed] == ["v0", "v1", "v2"]
    assert listed[0]["aliases"] == ["champion"] and listed[0]["artifact_uri"] == "/models/base"
    assert listed[1]["parent_id"] == listed[0]["id"]
    for ref in ("v1", "1", "V1"):
        assert ok(client.get(f"/v1/projects/{registry}/versions/{ref}"))["id"] == listed[1]["id"]
    missing = client.get(f"/v1/projects/{registry}/versions/v9")
    assert missing.status_code == 404
    assert "no version or alias 'v9'" in missing.json()["message"]
    assert client.get(f"/v1/projects/{registry}/versions/staging").status_code == 404
    assert client.get("/v1/projects/nope/versions").status_code == 404


def test_versions_have_no_update_path(client: TestClient, registry: str, store: Store) -> None:
    before = ok(client.get(f"/v1/projects/{registry}/versions/v1"))
    for method in ("PUT", "PATCH", "DELETE"):
        response = client.request(method, f"/v1/projects/{registry}/versions/v1", json={})
        assert response.status_code == 405, method
    ok(client.post(f"/v1/projects/{registry}/promote", json={"version": "v1"}))
    ok(client.post(f"/v1/projects/{registry}/rollback"))
    after = ok(client.get(f"/v1/projects/{registry}/versions/v1"))
    assert {k: v for k, v in after.items() if k != "aliases"} == {
        k: v for k, v in before.items() if k != "aliases"
    }
    with store.write() as session:  # bootstrap again changes nothing either
        v0 = ensure_base_version(session, get_project(session, registry), Base())
    assert v0.number == 0 and len(ok(client.get(f"/v1/projects/{registry}/versions"))) == 3


def test_promote_needs_force_past_a_failed_gate_and_records_every_move(
    client: TestClient, registry: str
) -> None:
    path = f"/v1/projects/{registry}"
    moved = ok(client.post(f"{path}/promote", json={"version": "v1", "reason": "looks good"}))
    assert moved == {
        "alias": "champion",
        "version": "v1",
        "previous": "v0",
        "changed": True,
        "forced": False,
        "reason": "looks good",
    }
    refused = client.post(f"{path}/promote", json={"version": "2"})
    assert refused.status_code == 409
    assert "v2 did not pass the promotion gate" in refused.json()["message"]
    assert "force" in refused.json()["message"]
    assert champion(client, registry) == "v1"  # a refused promotion moved nothing
    forced = ok(client.post(f"{path}/promote", json={"version": "v2", "force": True}))
    assert forced["forced"] and forced["reason"] == "forced past the gate: manual promotion"
    same = ok(client.post(f"{path}/promote", json={"version": "v2"}))
    assert same["changed"] is False
    history = ok(client.get(f"{path}/aliases/history", params={"alias": "champion"}))
    assert [(h["version"], h["previous"], h["reason"], h["actor"]) for h in history] == [
        ("v0", None, "base model", "fineloop"),
        ("v1", "v0", "looks good", "api"),
        ("v2", "v1", "forced past the gate: manual promotion", "api"),
    ]
    assert client.post(f"{path}/promote", json={"version": "v7"}).status_code == 404
    assert client.post(f"{path}/promote", json={"version": "v1", "extra": 1}).status_code == 422


def test_rollback_walks_back_and_refuses_without_history(client: TestClient, registry: str) -> None:
    path = f"/v1/projects/{registry}"
    refused = client.post(f"{path}/rollback")
    assert refused.status_code == 409  # the champion never moved since v0
    assert "nothing to roll back to" in refused.json()["message"]
    ok(client.post(f"{path}/promote", json={"version": "v1"}))
    back = ok(client.post(f"{path}/rollback", json={"reason": "complaints"}))
    assert (back["version"], back["previous"], back["reason"]) == ("v0", "v1", "complaints")
    assert champion(client, registry) == "v0"
    aliases = ok(client.get(f"{path}/aliases"))
    assert [(a["alias"], a["version"]) for a in aliases] == [("champion", "v0")]
    other = client.post(f"{path}/rollback", json={"alias": "challenger"})
    assert other.status_code == 409


def test_compare_uses_one_shared_split_when_a_run_measured_both(
    client: TestClient, registry: str
) -> None:
    found = ok(client.get(f"/v1/projects/{registry}/versions/compare?a=v0&b=v1"))
    assert found["same_split"] and found["evaluated_by"] == "v1"
    assert found["primary"] == "ndcg@10"
    assert found["metrics"]["ndcg@10"] == {"a": 0.5, "b": 0.6, "delta": pytest.approx(0.1)}
    rough = ok(client.get(f"/v1/projects/{registry}/versions/compare?a=v1&b=v2"))
    assert not rough["same_split"] and rough["evaluated_by"] is None
    assert rough["metrics"]["ndcg@10"]["delta"] == pytest.approx(-0.15)
    missing = client.get(f"/v1/projects/{registry}/versions/compare?a=v1&b=v5")
    assert missing.status_code == 404
    assert client.get(f"/v1/projects/{registry}/versions/compare?a=v1").status_code == 422


def test_concurrent_promotions_leave_one_consistent_history(
    settings: Settings, store: Store, registry: str
) -> None:
    stores = [store, Store.open(settings, migrate_schema=False)]
    barrier = threading.Barrier(2)

    def promote(through: Store, ref: str) -> None:
        for _ in range(5):
            barrier.wait()
            with through.write() as session:
                found = get_project(session, registry)
                manage.promote(session, found, ref, force=True, reason=ref)

    threads = [
        threading.Thread(target=promote, args=(s, r))
        for s, r in zip(stores, ("1", "2"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stores[1].close()
    with store.read() as session:
        found = get_project(session, registry)
        changes = manage.history_public(session, found, "champion")
        current = f"v{resolve(session, found, 'champion').number}"
    # every move starts where the one before it ended: no lost or interleaved update
    for before, after in itertools.pairwise(changes):
        assert after["previous"] == before["version"], changes
    assert changes[-1]["version"] == current

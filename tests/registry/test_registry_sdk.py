"""The registry through the Python SDK against a running server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.versions import register_version
from fineloop.schemas import ProjectCreate
from fineloop.sdk import Client, FineloopError
from fineloop.store import Store
from fineloop.store.projects import create_project


class Base:
    def default_base_model(self) -> str:
        return "/models/base"


@pytest.fixture
def sdk(settings: Settings, store: Store) -> Iterator[Client]:
    """Project faq: v0 champion; v1 better than v0 on its run's split; v2 failed the gate."""
    with store.write() as session:
        project = create_project(session, ProjectCreate(name="faq", task="embedding"))
        v0 = ensure_base_version(session, project, Base())
        for number, (score, passed) in enumerate(((0.7, True), (0.4, False)), start=1):
            register_version(
                session,
                project,
                artifact_uri=f"/artifacts/v{number}",
                base_model=v0.base_model,
                parent_id=v0.id,
                metrics={
                    "primary": "ndcg@10",
                    "candidate": {"ndcg@10": score},
                    "champion": {"ndcg@10": 0.5},
                    "base": {"ndcg@10": 0.5},
                    "champion_version": "v0",
                    "base_version": "v0",
                },
                gate={"passed": passed, "reason": f"gate said {passed}"},
            )
    server = LiveServer(settings)
    with Client(server.url) as client:
        yield client
    server.stop()


def test_the_sdk_lists_compares_promotes_and_rolls_back(sdk: Client) -> None:
    assert [v["version"] for v in sdk.versions("faq")] == ["v0", "v1", "v2"]
    assert sdk.version("faq", 1)["artifact_uri"] == "/artifacts/v1"
    assert sdk.version("faq", "champion")["version"] == "v0"
    compared = sdk.compare("faq", "v0", 1)
    assert compared["same_split"]
    assert compared["metrics"]["ndcg@10"]["delta"] == pytest.approx(0.2)
    moved = sdk.promote("faq", "v1", reason="better")
    assert (moved["previous"], moved["version"]) == ("v0", "v1")
    with pytest.raises(FineloopError) as refused:
        sdk.promote("faq", 2)
    assert refused.value.status == 409 and "gate said False" in refused.value.message
    assert sdk.promote("faq", 2, force=True, reason="try it")["forced"] is True
    assert sdk.aliases("faq") == {"champion": "v2"}
    assert sdk.rollback("faq", reason="worse online")["version"] == "v1"
    reasons = [h["reason"] for h in sdk.alias_history("faq", "champion")]
    assert reasons == ["base model", "better", "forced past the gate: try it", "worse online"]
    with pytest.raises(FineloopError) as unknown:
        sdk.version("faq", "v9")
    assert unknown.value.status == 404
    assert sdk.jobs("faq") == [] and sdk.snapshots("faq") == []
    with pytest.raises(FineloopError) as missing:
        sdk.job(12345)
    assert missing.value.status == 404

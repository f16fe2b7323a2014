"""The SDK's snapshot-build and evaluation jobs, against a live `fineloop serve`."""

from __future__ import annotations

import pytest
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from jobs_live import server

from conftest import LiveServer
from fineloop import Client
from fineloop.sdk.transport import FineloopError

__all__ = ["fake_plugin", "fake_project", "server"]


def test_the_sdk_queues_a_snapshot_build_and_an_evaluation_and_reads_their_results(
    server: LiveServer, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    client = Client(server.url)
    built = client.wait(client.build_snapshot(name, seed=3)["id"], timeout=120)
    assert built["state"] == "succeeded", built
    snapshot = built["result"]["snapshot_id"]
    assert [s["id"] for s in client.snapshots(name)] == [snapshot]

    scored = client.wait(client.evaluate(name, snapshot=snapshot[:10])["id"], 120)
    assert scored["state"] == "succeeded", scored
    assert (scored["result"]["version"], scored["result"]["snapshot_id"]) == ("v0", snapshot)
    assert 0.4 < scored["result"]["metrics"]["score"] < 0.6

    with pytest.raises(FineloopError) as missing:
        client.evaluate(name, version="v9")
    assert missing.value.status == 404

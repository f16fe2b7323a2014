"""The serving calls of the SDK against a real `fineloop serve` on the tiny model:
search -> feedback -> search and select, calibration, and the errors users meet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LiveServer
from fineloop import Client, FineloopError
from fineloop.config import Settings

CATALOG = {
    "reset": ("how do i reset my password", {"section": "account"}),
    "email": ("change the email of my account", {"section": "account"}),
    "delete": ("delete and close my account", {"section": "account"}),
    "card": ("my card is lost or stolen block it", {"section": "cards"}),
    "refund": ("get a refund for a payment", {"section": "billing"}),
    "invoice": ("where is the invoice for my bill", {"section": "billing"}),
    "cancel": ("cancel my subscription plan", {"section": "billing"}),
    "invite": ("invite a colleague to the team", {"section": "team"}),
    "export": ("export my data to a file", {"section": "account"}),
}


@pytest.fixture
def sdk(settings: Settings, tiny_model: Path) -> Iterator[Client]:
    """A live server with project `shop` (tiny base model) and the catalog above."""
    server = LiveServer(settings)
    with Client(server.url) as client:
        client.create_project("shop", "embedding", base_model=str(tiny_model))
        client.upsert_items(
            "shop", [{"id": k, "text": t, "metadata": m} for k, (t, m) in CATALOG.items()]
        )
        yield client
    server.stop()


def ids(answer: dict[str, object], key: str = "items") -> list[str]:
    hits = answer[key]
    assert isinstance(hits, list)
    return [hit["id"] for hit in hits]


def test_search_ranks_logs_and_filters(sdk: Client) -> None:
    found = sdk.search("shop", "reset my password", k=3, user_id="u1")

    assert len(found["items"]) == 3 and found["model_version"] == "v0"
    assert [hit["rank"] for hit in found["items"]] == [1, 2, 3]
    assert all(0 <= hit["probability"] <= 1 for hit in found["items"])
    logged = sdk.get_interaction("shop", found["interaction_id"])
    assert logged["input"] == "reset my password" and logged["user_id"] == "u1"
    assert [item["id"] for item in logged["output"]["items"]] == ids(found)

    billing = sdk.search("shop", "reset my password", k=9, filters={"section": "billing"})
    assert set(ids(billing)) == {"refund", "invoice", "cancel"}
    by_version = sdk.search("shop", "refund", version="v0")
    assert by_version["model_version"] == "v0"


def test_a_selection_sent_with_the_sdk_reorders_the_next_search(sdk: Client) -> None:
    before = sdk.search("shop", "reset my password", k=9)
    picked, dropped = ids(before)[4], ids(before)[0]

    stored = sdk.selection("shop", before["interaction_id"], [picked], rejected=[dropped])
    after = sdk.search("shop", "reset my password", k=9)

    assert stored["reward"] == 1.0
    assert after["adapted"] is True
    assert ids(after)[0] == picked and ids(after)[-1] == dropped


def test_select_follows_threshold_and_max_and_learns_from_picks(sdk: Client) -> None:
    everything = sdk.select("shop", "my account", 0.0)
    capped = sdk.select("shop", "my account", threshold=0.0, max=2)
    assert len(everything["items"]) == len(CATALOG) and everything["threshold"] == 0.0
    assert len(capped["items"]) == 2
    assert [c["id"] for c in capped["candidates"] if c["selected"]] == ids(capped)

    first = sdk.select("shop", "my account", 0.5)
    wanted = ["reset", "email", "delete", "export"]
    assert set(ids(first)) != set(wanted)  # the tiny model alone gets it wrong
    sdk.selection("shop", first["interaction_id"], selected=wanted)
    again = sdk.select("shop", "my account", 0.5)

    assert set(ids(again)) == set(wanted) and again["adapted"] is True


def test_calibration_is_shown_and_refitted(sdk: Client) -> None:
    assert sdk.calibration("shop")["method"] == "default"
    for query in ("reset my password", "refund a payment", "lost card", "cancel my plan"):
        found = sdk.search("shop", query, k=5)
        right, *wrong = ids(found)
        sdk.selection("shop", found["interaction_id"], [right], rejected=wrong)

    fitted = sdk.refit_calibration("shop")

    assert fitted["method"] == "platt" and fitted["samples"] == 20
    assert sdk.calibration("shop", version="v0") == fitted | {"model_version": "v0"}


def test_bad_calls_raise_with_the_servers_message(sdk: Client) -> None:
    with pytest.raises(FineloopError) as unknown_version:
        sdk.search("shop", "refund", version="v9")
    assert unknown_version.value.status == 404
    with pytest.raises(FineloopError) as unknown_project:
        sdk.select("nope", "select the walls")
    assert unknown_project.value.status == 404
    sdk.create_project("empty", "embedding", base_model=sdk.get_project("shop")["base_model"])
    with pytest.raises(FineloopError) as no_items:
        sdk.search("empty", "refund")
    assert no_items.value.status == 422 and "upsert" in no_items.value.message
    with pytest.raises(FineloopError) as bad_k:
        sdk.search("shop", "refund", k=0)
    assert bad_k.value.status == 422


def test_the_sdk_waits_through_503s_while_the_index_builds(
    settings: Settings, tiny_model: Path
) -> None:
    """A server that never waits for builds answers 503 + Retry-After at first; the SDK
    sends the search again after the pause and its caller sees only the answer."""
    server = LiveServer(settings, extra_env={"FINELOOP_SERVING_WAIT_SECONDS": "0"})
    try:
        with Client(server.url, timeout=60) as client:
            client.create_project("fresh", "embedding", base_model=str(tiny_model))
            rows = [{"id": k, "text": t, "metadata": m} for k, (t, m) in CATALOG.items()]
            client.upsert_items("fresh", rows)
            raw = client._t.http.post("/v1/projects/fresh/search", json={"query": "refund"})
            assert raw.status_code == 503 and int(raw.headers["retry-after"]) >= 1
            assert raw.json()["progress"]["version"] == "v0"

            found = client.search("fresh", "get a refund", k=1)  # waits, no error

            assert ids(found) == ["refund"]
            assert client.index_status("fresh")["versions"][0]["state"] == "ready"
            logged = client.get_interaction("fresh", found["interaction_id"])
            assert logged["input"] == "get a refund"  # logged once, by the answered request
    finally:
        server.stop()

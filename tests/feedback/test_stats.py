"""Reward statistics of a project: counts by kind, a histogram and a time series."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

# Six events over two weeks; decay is off, so effective reward = stored reward.
EVENTS: list[dict[str, Any]] = [
    {"kind": "thumb", "value": "up", "timestamp": "2024-03-04T09:15:00Z"},  # Monday
    {"kind": "thumb", "value": "down", "timestamp": "2024-03-04T09:45:00Z"},
    {"kind": "rating", "value": 3, "timestamp": "2024-03-04T17:00:00Z"},  # reward 0
    {"kind": "rating", "value": 4, "timestamp": "2024-03-05T08:00:00+02:00"},  # 06:00 UTC
    {"kind": "correction", "output": "fixed", "timestamp": "2024-03-10T23:30:00Z"},  # Sunday
    {"kind": "label", "label": "faq", "timestamp": "2024-03-11T00:00:00Z"},  # next Monday
]


@pytest.fixture
def six_events(client: TestClient, project: str) -> str:
    client.patch(f"/v1/projects/{project}", json={"reward_policy": {"half_life_days": None}})
    events = [{**event, "input": "q"} for event in EVENTS]
    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})
    assert response.status_code == 201, response.text
    return project


def stats(client: TestClient, project: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/projects/{project}/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_counts_by_kind_totals_and_mean(client: TestClient, six_events: str) -> None:
    body = stats(client, six_events)

    assert body["by_kind"] == {"correction": 1, "label": 1, "rating": 2, "thumb": 2}
    assert body["total"] == 6
    assert body["trainable"] == 5  # the neutral rating is below the quality threshold
    assert body["mean_reward"] == pytest.approx((1 - 1 + 0 + 0.5 - 0.5 + 1) / 6)


def test_the_histogram_has_twenty_bins_over_minus_one_to_one(
    client: TestClient, six_events: str
) -> None:
    histogram = stats(client, six_events)["histogram"]

    assert len(histogram) == 20
    assert histogram[0]["low"] == pytest.approx(-1.0)
    assert histogram[-1]["high"] == pytest.approx(1.0)
    assert all(a["high"] == pytest.approx(b["low"]) for a, b in itertools.pairwise(histogram))
    assert sum(b["count"] for b in histogram) == 6
    counts = {i: b["count"] for i, b in enumerate(histogram) if b["count"]}
    assert counts == {0: 1, 5: 1, 10: 1, 15: 1, 19: 2}  # -1, -0.5, 0, 0.5, and 1 twice


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        (
            "day",
            [
                ("2024-03-04T00:00:00Z", 3, 0.0),
                ("2024-03-05T00:00:00Z", 1, 0.5),
                ("2024-03-10T00:00:00Z", 1, -0.5),
                ("2024-03-11T00:00:00Z", 1, 1.0),
            ],
        ),
        (
            "hour",
            [
                ("2024-03-04T09:00:00Z", 2, 0.0),
                ("2024-03-04T17:00:00Z", 1, 0.0),
                ("2024-03-05T06:00:00Z", 1, 0.5),
                ("2024-03-10T23:00:00Z", 1, -0.5),
                ("2024-03-11T00:00:00Z", 1, 1.0),
            ],
        ),
        (
            "week",
            [("2024-03-04T00:00:00Z", 5, 0.0), ("2024-03-11T00:00:00Z", 1, 1.0)],
        ),
    ],
)
def test_over_time_buckets_start_in_utc_and_count_their_events(
    client: TestClient, six_events: str, bucket: str, expected: list[tuple[str, int, float]]
) -> None:
    over_time = stats(client, six_events, bucket=bucket)["over_time"]

    got = [(parse(b["start"]), b["count"], b["mean_reward"]) for b in over_time]
    assert got == [(parse(s), n, pytest.approx(m)) for s, n, m in expected]


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def test_an_empty_project_has_zero_counts_and_no_mean(client: TestClient, project: str) -> None:
    body = stats(client, project)

    assert (body["total"], body["trainable"], body["by_kind"]) == (0, 0, {})
    assert body["mean_reward"] is None
    assert sum(b["count"] for b in body["histogram"]) == 0
    assert body["over_time"] == []


def test_stats_count_only_the_projects_own_feedback(client: TestClient, six_events: str) -> None:
    client.post("/v1/projects", json={"name": "other", "task": "fake"})
    client.post("/v1/projects/other/feedback", json={"kind": "thumb", "value": "up", "input": "q"})

    assert stats(client, six_events)["total"] == 6
    assert stats(client, "other")["by_kind"] == {"thumb": 1}


def test_stats_use_decayed_rewards(client: TestClient, project: str) -> None:
    def days_ago(days: int) -> str:
        return (datetime.now(UTC) - timedelta(days=days)).isoformat()

    for days in (56, 730):  # with the default 90-day half-life: 0.65 and almost nothing
        client.post(
            f"/v1/projects/{project}/feedback",
            json={"kind": "thumb", "value": "up", "input": "q", "timestamp": days_ago(days)},
        )

    body = stats(client, project)

    counts = {i: b["count"] for i, b in enumerate(body["histogram"]) if b["count"]}
    assert counts == {10: 1, 16: 1}
    assert body["trainable"] == 1
    assert body["mean_reward"] == pytest.approx((0.5 ** (56 / 90) + 0.5 ** (730 / 90)) / 2, 1e-4)


def test_an_unknown_bucket_is_422(client: TestClient, project: str) -> None:
    response = client.get(f"/v1/projects/{project}/stats", params={"bucket": "year"})

    assert response.status_code == 422
    assert "bucket" in response.json()["message"]

"""Hand-made catalog and small request helpers shared by the serving tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

CATALOG = [
    ("reset", "how do i reset my password", {"section": "account"}),
    ("email", "change the email of my account", {"section": "account"}),
    ("delete", "delete and close my account", {"section": "account"}),
    ("card", "my card is lost or stolen block it", {"section": "cards"}),
    ("refund", "get a refund for a payment", {"section": "billing"}),
    ("invoice", "where is the invoice for my bill", {"section": "billing"}),
    ("cancel", "cancel my subscription plan", {"section": "billing"}),
    ("invite", "invite a colleague to the team", {"section": "team"}),
    ("export", "export my data to a file", {"section": "account"}),
]


def items(rows: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"id": key, "text": text, "metadata": meta} for key, text, meta in rows]


def search(client: TestClient, project: str, query: str, **extra: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project}/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(body: dict[str, Any], key: str = "items") -> list[str]:
    return [hit["id"] for hit in body[key]]

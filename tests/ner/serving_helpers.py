"""What the NER serving tests share: a token-classification folder made from the tiny
BERT whose head finds every word (B- of the first type, score ~0.65, below the memory's
0.99), projects on it, requests and feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fineloop.serving import get_serving
from fineloop.tasks.ner.options import NerOptions

TYPES = ["EQUIPMENT", "MEASURE"]


def build_ner_model(base: Path, out: Path, types: list[str] = TYPES) -> Path:
    """`base` (the tiny sentence-transformers folder) with a token-classification head
    whose weights are zero and whose bias favours B-<first type>: every word is a span of
    that type, deterministically, with a score well below the gazetteer's."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tags = NerOptions(entity_types=types).tags()
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)},
    )
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[tags.index(f"B-{types[0]}")] = 2.0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def create_project(client: TestClient, name: str, model: Path, **policy: Any) -> None:
    body = {
        "name": name,
        "task": "ner",
        "base_model": str(model),
        "task_options": {"entity_types": TYPES},
        "serving_policy": policy,
    }
    created = client.post("/v1/projects", json=body)
    assert created.status_code == 201, created.text


def extract(client: TestClient, project: str, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/v1/projects/{project}/extract", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def settle(client: TestClient) -> None:
    """Wait for the background refreshes the feedback hook started."""
    get_serving(client.app).background.join()


def send_feedback(client: TestClient, project: str, event: dict[str, Any]) -> int:
    sent = client.post(f"/v1/projects/{project}/feedback", json=event)
    assert sent.is_success, sent.text
    settle(client)
    feedback_id: int = sent.json()["id"]
    return feedback_id


def spans_by_text(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["text"]: s for s in result["spans"]}

"""What the NER serving tests share: a token-classification folder made from the tiny
BERT whose head finds every word (B- of the first type, score ~0.65, below the memory's
0.99), projects on it, and the predictor while predict.py has not landed (stand-in)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
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


class StandInPredictor:
    """Argmax per token, one span per B- tag run; only while predict.py is missing."""

    def __init__(self, path: str) -> None:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.model = AutoModelForTokenClassification.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        tags = [self.model.config.id2label[i] for i in range(len(self.model.config.id2label))]
        self.tags = tags
        self.entity_types = [t[2:] for t in tags if t.startswith("B-")]

    def prepare_for_serving(self, settings: Any) -> None:
        pass

    def extract(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        import torch

        found = []
        for text in texts:
            encoded = self.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
            offsets = encoded.pop("offset_mapping")[0].tolist()
            with torch.no_grad():
                probs = self.model(**encoded).logits[0].softmax(-1)
            spans: list[dict[str, Any]] = []
            for (start, end), row in zip(offsets, probs, strict=True):
                tag = self.tags[int(row.argmax())]
                if end <= start or tag == "O":
                    continue
                if tag.startswith("I-") and spans and spans[-1]["label"] == tag[2:]:
                    spans[-1]["end"] = end
                    continue
                spans.append({"start": start, "end": end, "label": tag[2:], "score": 0.0})
                spans[-1]["score"] = float(row.max())
            for span in spans:
                span["text"] = text[span["start"] : span["end"]]
            found.append(spans)
        return found


def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for the NER modules other helpers are writing, while they are missing."""
    from fineloop.tasks.ner.task import NerTask

    if importlib.util.find_spec("fineloop.tasks.ner.predict") is None:
        monkeypatch.setattr(NerTask, "load", lambda self, model: StandInPredictor(model))
    if importlib.util.find_spec("fineloop.tasks.ner.feedback") is None:
        monkeypatch.setattr(NerTask, "check_feedback", lambda self, *a: [])


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

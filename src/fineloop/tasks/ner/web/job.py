"""The job page of a NER training run: entity scores per type for base, champion and
candidate, and held-out texts with the reference spans next to each model's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from fineloop.store.schema import Job, Project
from fineloop.tasks.ner.spans import spans_of, text_of
from fineloop.tasks.ner.web.highlight import colours, entity_types, legend, segments
from fineloop.tasks.ner.web.scores import MODELS, score_table
from fineloop.web.interactions import as_text


def job_panel(session: Session, job: Job) -> dict[str, Any]:
    project = session.get(Project, job.project_id)
    palette = colours(entity_types(project.task_options if project else None))
    result = job.result if isinstance(job.result, dict) else {}
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    assert isinstance(metrics, dict)
    version = result.get("version")
    candidate = f"{version} (candidate)" if isinstance(version, str) else "candidate"
    table = score_table(metrics, list(palette), palette, candidate)
    samples = metrics.get("samples")
    return {
        "legend": legend(palette),
        "scores": table,
        "samples": [sample_row(s, palette) for s in samples if isinstance(s, dict)]
        if isinstance(samples, list)
        else [],
        "sample_labels": table["columns"] if table else list(MODELS),
    }


def sample_row(sample: dict[str, Any], palette: Mapping[str, str]) -> dict[str, Any]:
    """One held-out text: the reference spans, then base, champion and candidate's (no
    segments for a model whose output on this text was not kept)."""
    text = text_of(sample.get("input"))
    if text is None:
        return {"raw_input": as_text(sample.get("input")), "reference": None, "outputs": []}
    outputs = sample.get("outputs") if isinstance(sample.get("outputs"), dict) else {}
    assert isinstance(outputs, dict)
    reference = spans_of(sample.get("reference"))
    shown = []
    for key in MODELS:
        found = outputs.get(key)
        spans = spans_of(found)
        shown.append(
            {
                "key": key,
                "segments": None if found is None else segments(text, spans, palette),
                "exact": found is not None and spans == reference,
            }
        )
    return {
        "raw_input": None,
        "reference": segments(text, reference, palette),
        "outputs": shown,
    }

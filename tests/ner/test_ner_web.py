"""The dashboard for NER projects: texts with their spans highlighted by type, the labels
and corrections on each as a change of the span set, and entity scores per type for base,
champion and candidate, with held-out texts side by side on a run's page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fineloop.jobs import store as jobs
from fineloop.registry.versions import register_version
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks.ner.spans import Span
from fineloop.tasks.ner.web.highlight import PALETTE, changes, segments
from fineloop.web.interactions import PAGE

TYPES = ["EQUIPMENT", "MEASURE"]
EQUIPMENT, MEASURE = PALETTE[0], PALETTE[1]
PUMP = "Replace the pump at 40 psi."  # pump 12-16, 40 psi 20-26
ATTACK = '<script>alert(1)</script> pump <img src=x onerror="alert(2)">'


def create(client: TestClient, name: str) -> None:
    body = {"name": name, "task": "ner", "task_options": {"entity_types": TYPES}}
    created = client.post("/v1/projects", json=body)
    assert created.status_code == 201, created.text


def log(client: TestClient, name: str, key: str, text: str, spans: list[dict[str, Any]]) -> None:
    body = {"id": key, "input": {"text": text}, "output": {"spans": spans}}
    sent = client.post(f"/v1/projects/{name}/interactions", json=body)
    assert sent.is_success, sent.text


def feedback(client: TestClient, name: str, event: dict[str, Any]) -> None:
    sent = client.post(f"/v1/projects/{name}/feedback", json=event)
    assert sent.is_success, sent.text


def panel(html: str, section: str) -> str:
    start = html.index(f'id="{section}"')
    return html[start : html.index("</section>", start)]


def row_of(html: str, key: str) -> str:
    start = html.index(f'data-interaction-id="{key}"')
    return html[start : html.index("</tr>", start)]


def mark(text: str, label: str, colour: str) -> str:
    return (
        f'<mark class="ent" data-type="{label}" style="background: {colour}">{text}'
        f'<span class="ent-type">{label}</span></mark>'
    )


def span(start: int, end: int, label: str) -> dict[str, Any]:
    return {"start": start, "end": end, "label": label}


def test_texts_show_their_spans_by_type_and_each_correction_as_a_change(
    client: TestClient,
) -> None:
    create(client, "maint")
    log(client, "maint", "a", PUMP, [span(12, 16, "EQUIPMENT"), span(20, 26, "MEASURE")])
    log(client, "maint", "b", "Check valve V-12 now.", [span(6, 11, "EQUIPMENT")])
    log(client, "maint", "c", "Nothing here.", [])
    edits = [
        {"op": "relabel", "start": 12, "end": 16, "label": "MEASURE"},
        {"op": "delete", "start": 20, "end": 26},
        {"op": "add", "start": 0, "end": 7, "label": "EQUIPMENT"},
    ]
    feedback(
        client, "maint", {"kind": "correction", "interaction_id": "a", "output": {"edits": edits}}
    )
    feedback(client, "maint", {"kind": "thumb", "interaction_id": "a", "value": "down"})
    move = {"op": "move", "start": 6, "end": 11, "new_start": 6, "new_end": 16}
    feedback(
        client, "maint", {"kind": "correction", "interaction_id": "b", "output": {"edits": [move]}}
    )
    feedback(client, "maint", {"kind": "label", "interaction_id": "c", "spans": []})

    response = client.get("/projects/maint")
    assert response.status_code == 200
    texts = panel(response.text, "texts-panel")
    assert texts.count("data-interaction-id=") == 3
    # the legend: one colour per declared type, in the project's order
    legend = texts[texts.index('class="ner-legend"') :]
    assert legend.index(f'background: {EQUIPMENT}">EQUIPMENT') < legend.index(
        f'background: {MEASURE}">MEASURE'
    )
    a = row_of(texts, "a")
    shown = a[: a.index("feedback-cell")]
    pump, psi = mark("pump", "EQUIPMENT", EQUIPMENT), mark("40 psi", "MEASURE", MEASURE)
    assert f"Replace the {pump} at {psi}." in shown
    # the correction: what changed, and the span set it makes right
    fixed = a[a.index("fb-correction") :]
    assert "relabelled</span> pump: <b>EQUIPMENT</b> → <b>MEASURE</b>" in fixed
    assert "removed</span> <mark>40 psi</mark> <b>MEASURE</b>" in fixed
    assert "added</span> <mark>Replace</mark> as <b>EQUIPMENT</b>" in fixed
    replace, pump = mark("Replace", "EQUIPMENT", EQUIPMENT), mark("pump", "MEASURE", MEASURE)
    assert f"{replace} the {pump} at 40 psi." in fixed
    assert "thumb-down" in a
    b = row_of(texts, "b")
    assert "moved</span> valve → valve V-12 <b>EQUIPMENT</b>" in b
    c = row_of(texts, "c")
    assert "fb-label" in c and "the spans shown are right" in c and "0 spans" in c


def test_hostile_text_and_types_stay_text(client: TestClient) -> None:
    create(client, "hostile")
    at = ATTACK.index("pump")
    log(client, "hostile", "x", ATTACK, [span(at, at + 4, "EQUIPMENT")])
    fixed = {"spans": [span(0, 8, "EQUIPMENT"), span(at, at + 4, "MEASURE")]}
    feedback(client, "hostile", {"kind": "correction", "interaction_id": "x", "output": fixed})
    html = client.get("/projects/hostile").text
    assert "<script>alert" not in html and "<img src=x" not in html
    row = row_of(html, "x")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; " + mark("pump", "EQUIPMENT", EQUIPMENT) in row
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in row
    # the correction marks part of the hostile text: still escaped, inside the mark
    assert mark("&lt;script&gt;", "EQUIPMENT", EQUIPMENT) + "alert(1)" in row


def test_texts_are_paged_newest_first(client: TestClient) -> None:
    create(client, "many")
    rows = [
        {
            "id": f"t{n:02d}",
            "input": {"text": f"text {n}"},
            "output": {"spans": []},
            "created_at": f"2026-01-01T00:{n:02d}:00+00:00",
        }
        for n in range(PAGE + 3)
    ]
    sent = client.post("/v1/projects/many/interactions/batch", json={"interactions": rows})
    assert sent.is_success, sent.text
    first = re.findall(r'data-interaction-id="([^"]+)"', client.get("/projects/many").text)
    second = re.findall(r'data-interaction-id="([^"]+)"', client.get("/projects/many?page=2").text)
    assert first[0] == f"t{PAGE + 2:02d}" and len(first) == PAGE
    assert second == ["t02", "t01", "t00"]


def scores(f1: float, equipment: float, measure: float) -> dict[str, float]:
    return {
        "f1": f1, "precision": f1, "recall": f1, "f1_strict": f1, "texts": 2.0,
        "f1_EQUIPMENT": equipment, "precision_EQUIPMENT": 1.0, "recall_EQUIPMENT": equipment,
        "support_EQUIPMENT": 3.0,
        "f1_MEASURE": measure, "precision_MEASURE": measure, "recall_MEASURE": 0.5,
        "support_MEASURE": 2.0,
    }  # fmt: skip


def finished_run(store: Store, name: str, artifact: Path) -> int:
    """A training job that registered v1 with base / champion / candidate scores and two
    held-out texts, the way a run records them (`Comparison.as_metrics`)."""
    reference = {"spans": [span(12, 16, "EQUIPMENT"), span(20, 26, "MEASURE")]}
    samples = [
        {
            "input": {"text": PUMP},
            "reference": reference,
            "outputs": {
                "base": {"spans": []},
                "champion": {"spans": [span(12, 16, "MEASURE")]},
                "candidate": reference,
            },
        },
        {"input": {"text": "No entity."}, "reference": {"spans": []},
         "outputs": {"base": {"spans": []}, "champion": None, "candidate": {"spans": []}}},
    ]  # fmt: skip
    metrics = {
        "primary": "f1",
        "higher_is_better": True,
        "split": "test",
        "candidate": scores(0.8, 0.75, 0.9),
        "champion": scores(0.5, 0.25, 0.6),
        "base": scores(0.1, 0.0, 0.2),
        "base_version": "v0",
        "champion_version": "v0",
        "samples": samples,
    }
    artifact.mkdir()
    with store.write() as session:
        project = get_project(session, name)
        job = jobs.create_job(session, project, "train", {}, claimed_by="test")
        register_version(session, project, artifact_uri="tiny", base_model="tiny")  # v0
        version = register_version(
            session, project, artifact_uri=str(artifact), base_model="tiny", job_id=job.id,
            metrics=metrics,
        )  # fmt: skip
        result = {"version": f"v{version.number}", "metrics": metrics}
        assert jobs.finish(session, job.id, jobs.SUCCEEDED, "done", result=result)
        return job.id


def test_a_run_shows_scores_per_type_and_spans_side_by_side(
    client: TestClient, store: Store, tmp_path: Path
) -> None:
    create(client, "scored")
    job = finished_run(store, "scored", tmp_path / "v1")
    response = client.get(f"/jobs/{job}")
    assert response.status_code == 200
    table = panel(response.text, "scores-panel")
    rows = re.findall(r'<tr data-type="([^"]+)"', table)
    assert rows == ["EQUIPMENT", "MEASURE", "overall"]
    equipment = table[table.index('data-type="EQUIPMENT"') : table.index('data-type="MEASURE"')]
    assert '<td class="num">3</td>' in equipment  # support
    assert re.findall(r"(\d\.\d{3})\s*<div", equipment) == ["0.000", "0.250", "0.750"]
    assert '<td class="num best">0.750' in equipment and "+0.500" in equipment
    overall = table[table.index('data-type="overall"') :]
    assert re.findall(r"(\d\.\d{3})\s*<div", overall) == ["0.100", "0.500", "0.800"]
    assert "v0 (base)" in table and "v1 (candidate)" in table

    side = panel(response.text, "samples-panel")
    assert side.count('class="sample"') == 2
    first = side[side.index('class="sample"') : side.index("</tr>", side.index('class="sample"'))]
    cells = re.findall(r'<td class="(reference|output \w+)">(.*?)</td>', first, re.S)
    assert [kind for kind, _ in cells] == [
        "reference", "output base", "output champion", "output candidate",
    ]  # fmt: skip
    reference, base, champion, candidate = (html for _, html in cells)
    assert mark("pump", "EQUIPMENT", EQUIPMENT) in reference
    assert "<mark" not in base
    assert mark("pump", "MEASURE", MEASURE) in champion and "as the reference" not in champion
    assert mark("40 psi", "MEASURE", MEASURE) in candidate and "as the reference" in candidate
    second = side[side.rindex('class="sample"') :]
    assert '<td class="output champion"><span class="muted">—</span>' in second  # not kept

    project = client.get("/projects/scored").text
    scored = panel(project, "scores-panel")
    assert "v1 run" in scored and re.findall(r'<tr data-type="([^"]+)"', scored) == rows


def test_a_project_without_runs_says_so(client: TestClient) -> None:
    create(client, "fresh")
    html = client.get("/projects/fresh").text
    assert "No scores yet" in panel(html, "scores-panel") and "No texts yet" in html


def test_segments_and_changes_cover_every_edit() -> None:
    text = "abc def ghi"
    found = segments(text, [Span(4, 7, "X"), Span(5, 9, "Y"), Span(8, 40, "Z")], {"X": "#1"})
    # the overlapping span is skipped; one past the end is trimmed; an unknown type is grey
    assert [(s["text"], s["label"]) for s in found] == [
        ("abc ", None), ("def", "X"), (" ", None), ("ghi", "Z"),
    ]  # fmt: skip
    assert found[3]["colour"] == "#e5e7eb"
    shown = [Span(0, 3, "X"), Span(4, 7, "X"), Span(8, 11, "X")]
    right = [Span(0, 3, "Y"), Span(4, 9, "X")]
    assert [
        (c["op"], c["text"], c["label"], c["old_label"]) for c in changes(text, shown, right)
    ] == [
        ("relabelled", "abc", "Y", "X"),
        ("moved", "def g", "X", None),
        ("removed", "ghi", "X", None),
    ]
    assert [c["op"] for c in changes(text, [], [Span(0, 3, "X")])] == ["added"]

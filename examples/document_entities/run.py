"""Entities in maintenance and inspection texts: a NER model that learns from the people
who review its output.

Runs against `fineloop serve` (started here on a free port in a temporary folder, or yours
with --url), through the Python SDK only:
1. a `ner` project with the types EQUIPMENT, MEASURE and STANDARD on the default base
   (the packaged MiniLM with a fresh head), and a small training config;
2. 50 hand-labelled sentences imported as `spans-jsonl` (seed.jsonl), one training job:
   v1, gated against the untrained base;
3. 30 new texts (incoming.txt) extracted with v1; a reviewer compares each result with
   what it should be and sends the difference as a correction of edits (delete, add,
   relabel, move), or confirms a right result with a label event;
4. a new text naming equipment that was just corrected is recognised at once, before
   any retrain (online adaptation: the span comes back with source "memory");
5. a second training job from v1: gate, promotion, and the held-out texts (heldout.txt)
   read by v1 and by the new champion, with and without the gazetteer.

    .venv/bin/python examples/document_entities/run.py            # its own server (~5 min)
    .venv/bin/python examples/document_entities/run.py --url URL  # or a running one
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fineloop import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_server import free_name, local_server

HERE = Path(__file__).resolve().parent
TYPES = ["EQUIPMENT", "MEASURE", "STANDARD"]
TRAINING = {"epochs": 12, "batch_size": 8, "learning_rate": 1e-4, "max_length": 64}
MARK = re.compile(r"\[([^\]|]+)\|([A-Z]+)\]")
PROBES = {  # a new sentence around a corrected surface form, per type
    "EQUIPMENT": "The night shift reported a leak on the {} again.",
    "MEASURE": "The reading was {} at the start of the shift.",
    "STANDARD": "From now on the report must follow {}.",
}
Spans = list[dict[str, Any]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running fineloop server (default: start one)")
    args = parser.parse_args()
    incoming, heldout = marked(HERE / "incoming.txt"), marked(HERE / "heldout.txt")
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_server())
        client = stack.enter_context(Client(url, timeout=600))
        project = free_name(client, "document-entities")
        client.create_project(
            project,
            "ner",
            description="Equipment, measures and standards in maintenance texts.",
            task_options={"entity_types": TYPES},
        )
        client.update_project(project, training_policy={"train": TRAINING, "auto_promote": True})
        report = client.import_file(project, "feedback", HERE / "seed.jsonl", "spans-jsonl")
        say(f"project {project}: imported {report[-1]['created']} labelled sentences")
        first = train(client, project)

        say(f"extracting {len(incoming)} new texts with {first}; the reviewer answers")
        results = client.extract(project, [text for text, _ in incoming])["results"]
        corrected = review(client, project, incoming, results)
        online_adaptation(client, project, corrected)

        before = {
            "with the gazetteer": read(client, project, heldout, first),
            "model alone": read(client, project, heldout, first, adapt=False),
        }
        second = train(client, project)
        after = {
            "with the gazetteer": read(client, project, heldout, second),
            "model alone": read(client, project, heldout, second, adapt=False),
        }
        say(f"held-out texts ({len(heldout)}, never sent as feedback), exact-span F1:")
        for version, found in ((first, before), (second, after)):
            for name, value in found.items():
                say(f"  {version} {name:20s} {value:.3f}")
        champion = client.aliases(project)["champion"]
        if champion != second and after["model alone"] > before["model alone"]:
            # The gate judged on the job's own few test texts; a person who has the
            # held-out reading too may promote by hand, saying why (kept in the history).
            why = (
                f"held-out F1 {after['model alone']:.3f} vs {before['model alone']:.3f} "
                f"on {len(heldout)} texts"
            )
            client.promote(project, second, force=True, reason=why)
            say(f"promoted {second} by hand: {why}")
        say(f"champion: {client.aliases(project)['champion']}")


def marked(path: Path) -> list[tuple[str, Spans]]:
    """Lines of `[surface|TYPE]` mark-up as (text, spans); '#' lines are comments."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, spans, last = "", [], 0
        for match in MARK.finditer(line):
            text += line[last : match.start()]
            spans.append({"start": len(text), "end": len(text) + len(match[1]), "label": match[2]})
            text += match[1]
            last = match.end()
        rows.append((text + line[last:], spans))
    return rows


def train(client: Client, project: str) -> str:
    """One training job, followed to its end; prints the gate's verdict."""
    job = client.train(project)
    last = ""
    while (job := client.job(job["id"]))["state"] not in ("succeeded", "failed", "cancelled"):
        line = f"  job {job['id']} {job['state']:9s} {job['progress']:4.0%}  {job['message'] or ''}"
        if line != last:
            say(line)
            last = line
        time.sleep(2.0)
    if job["state"] != "succeeded":
        raise SystemExit(f"training {job['state']}: {job['error']}")
    result = job["result"]
    scores = result["metrics"]
    say(
        f"job {job['id']}: {job['message']}; f1 on its {scores['examples']} test texts: "
        f"candidate {scores['candidate']['f1']:.3f}, {result['compared_with']} "
        f"{scores['champion']['f1']:.3f}"
    )
    say(f"  gate: {result['gate']['reason']}")
    version: str = result["version"]
    if not result["promoted"]:
        say(f"  {version} was not promoted; {result['champion']} keeps serving")
    return version


def edits(shown: Spans, right: Spans) -> list[dict[str, Any]]:
    """What a reviewer's clicks amount to: delete what is wrong, move a span whose
    boundary is off, relabel one whose type is wrong, add what is missing."""
    at = {(s["start"], s["end"]): s for s in right}
    done: set[tuple[int, int]] = set()
    out: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    for span in shown:
        where = {"start": span["start"], "end": span["end"]}
        same = at.get((span["start"], span["end"]))
        near = same or next(
            (
                r
                for r in right
                if (r["start"], r["end"]) not in done
                and r["start"] < span["end"]
                and span["start"] < r["end"]
            ),
            None,
        )
        if near is None:
            out.append({"op": "delete", **where})
            continue
        done.add((near["start"], near["end"]))
        if near is not same:
            later.append(
                {"op": "move", **where, "new_start": near["start"], "new_end": near["end"]}
            )
            where = {"start": near["start"], "end": near["end"]}
        if near["label"] != span["label"]:
            later.append({"op": "relabel", **where, "label": near["label"]})
    missing = [r for r in right if (r["start"], r["end"]) not in done]
    return out + later + [{"op": "add", **r} for r in missing]


def review(
    client: Client, project: str, texts: list[tuple[str, Spans]], results: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Send each result's correction (or confirmation); the (surface, type) of every
    span the reviewer added, moved or relabelled."""
    changed: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    shown_examples = 0
    for (text, right), result in zip(texts, results, strict=True):
        fix = edits(result["spans"], right)
        if not fix:
            client.send_feedback(
                project,
                {"kind": "label", "interaction_id": result["interaction_id"], "spans": right},
            )
            counts["confirmed"] = counts.get("confirmed", 0) + 1
            continue
        client.correct(project, result["interaction_id"], {"edits": fix})
        for edit in fix:
            counts[edit["op"]] = counts.get(edit["op"], 0) + 1
        gained = {(s["start"], s["end"], s["label"]) for s in right}
        gained -= {(s["start"], s["end"], s["label"]) for s in result["spans"]}
        changed += [(text[start:end], label) for start, end, label in sorted(gained)]
        if shown_examples < 3:
            shown_examples += 1
            say(f"  {text!r}\n    shown: {spans_line(result['spans'])}\n    edits: {fix}")
    say(f"review sent: {counts}")
    return changed


def online_adaptation(client: Client, project: str, corrected: list[tuple[str, str]]) -> None:
    """A new text holding a form the reviewer just corrected, extracted at once: the
    first such form the model alone still misses, with the gazetteer off and on."""
    seed = (HERE / "seed.jsonl").read_text(encoding="utf-8")
    fresh = list(dict.fromkeys((f, label) for f, label in corrected if f not in seed))
    if not fresh:
        say("every corrected form was in the seed set already; no probe to show")
        return
    for form, label in fresh[:6]:
        probe = PROBES[label].format(form)
        alone = extract_once(client, project, probe, adapt=False)
        if not any(s["text"] == form and s["label"] == label for s in alone):
            break
    adapted = extract_once(client, project, probe, adapt=True)
    say(f"right after the corrections, no retrain: {probe!r}")
    say(f"    model alone:        {spans_line(alone)}")
    say(f"    with the gazetteer: {spans_line(adapted)}")


def extract_once(client: Client, project: str, text: str, adapt: bool) -> Spans:
    with gazetteer(client, project, adapt):
        spans: Spans = client.extract(project, text)["results"][0]["spans"]
    return spans


@contextlib.contextmanager
def gazetteer(client: Client, project: str, on: bool) -> Iterator[None]:
    """Online adaptation off for a while (`serving_policy.online_adaptation`) when not on."""
    if on:
        yield
        return
    client.update_project(project, serving_policy={"online_adaptation": False})
    try:
        yield
    finally:
        client.update_project(project, serving_policy={"online_adaptation": True})


def spans_line(spans: Spans) -> str:
    return ", ".join(f"{s['text']!r} {s['label']} ({s['source']})" for s in spans) or "nothing"


def read(
    client: Client, project: str, texts: list[tuple[str, Spans]], version: str, adapt: bool = True
) -> float:
    """Exact-span micro F1 of one version on the texts (the gazetteer on or off)."""
    with gazetteer(client, project, adapt):
        results = client.extract(project, [t for t, _ in texts], version=version)["results"]
    hits = found = gold = 0
    for (_, right), result in zip(texts, results, strict=True):
        want = {(s["start"], s["end"], s["label"]) for s in right}
        got = {(s["start"], s["end"], s["label"]) for s in result["spans"]}
        hits, found, gold = hits + len(want & got), found + len(got), gold + len(want)
    return 2 * hits / (found + gold) if found + gold else 0.0


START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {text}", flush=True)


if __name__ == "__main__":
    main()

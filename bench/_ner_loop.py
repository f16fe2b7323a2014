"""The feedback-simulation case of `ner_quality.py`: a NER project on a live `fineloop
serve` goes through one round of the loop, driven through the SDK as an application
would drive it.

1. import 10% of WNUT-17 train (`format=conll`) and train (job 1 → v1, the "base" here);
2. extract the next 20% with the serving champion (v1, plus the project's gazetteer:
   online adaptation is on, as by default); a simulated reviewer compares each result with
   the gold spans and sends the difference as a correction of edits (delete, add,
   relabel, move), or, when the result is right, a label event on the interaction
   confirming it (the full span set, often []);
3. online adaptation alone: extract the next 20% (and the test set) with v1 and the
   gazetteer the imports and corrections built, against v1 alone (NerPredictor in this
   process on the same folder);
4. retrain (job 2 → v2, trained from the champion v1 by the job as usual, gated);
5. plain: the bare script continues v1 on the gold spans of the same 10% + 20%
   (everything fineloop learnt from, without its held-out splits): the upper bound of
   what the corrections can give.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from _child import run_child
from _ner_common import (
    WNUT_TYPES,
    Sentence,
    bootstrap_f1_difference,
    minilm_path,
    predict_tags,
    save_sentences,
    score,
    tags_from_spans,
    to_conll,
)
from common import running_server
from fineloop import Client

PROJECT = "wnut17-loop"
JOB_TIMEOUT_S = 3600.0
BATCH = 128  # texts per extract call


def gold_spans(sentences: list[Sentence]) -> dict[str, list[dict[str, Any]]]:
    """text → its spans, as the `conll` converter reads them."""
    from fineloop.tasks.ner.imports import CONVERTERS

    _, events = CONVERTERS["conll"](to_conll(sentences))
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert isinstance(event.input, dict)
        found[str(event.input["text"])] = [s.model_dump() for s in event.spans or []]  # type: ignore[attr-defined]
    return found


def edits_between(shown: list[dict[str, Any]], gold: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The edits that turn `shown` into `gold`: a shown span with a gold one at the same
    offsets is kept or relabelled; one overlapping a gold span is moved (and relabelled
    if its type is wrong too); the other shown spans are deleted and the other gold
    spans added. Deletes come first, so no move lands on a span still shown."""
    key = lambda s: (s["start"], s["end"])  # noqa: E731
    gold_at = {key(g): g for g in gold}
    used_gold: set[tuple[int, int]] = set()
    deletes, moves, relabels = [], [], []
    pending = []
    for span in shown:
        match = gold_at.get(key(span))
        if match is not None:
            used_gold.add(key(span))
            if match["label"] != span["label"]:
                relabels.append({"op": "relabel", **_at(span), "label": match["label"]})
        else:
            pending.append(span)
    for span in pending:
        overlap = next(
            (
                g
                for g in gold
                if key(g) not in used_gold and g["start"] < span["end"] and span["start"] < g["end"]
            ),
            None,
        )
        if overlap is None:
            deletes.append({"op": "delete", **_at(span)})
            continue
        used_gold.add(key(overlap))
        moves.append(
            {"op": "move", **_at(span), "new_start": overlap["start"], "new_end": overlap["end"]}
        )
        if overlap["label"] != span["label"]:
            relabels.append({"op": "relabel", **_at(overlap), "label": overlap["label"]})
    adds = [{"op": "add", **_at(g), "label": g["label"]} for g in gold if key(g) not in used_gold]
    return deletes + moves + relabels + adds


def _at(span: dict[str, Any]) -> dict[str, int]:
    return {"start": span["start"], "end": span["end"]}


def review(
    results: list[dict[str, Any]], texts: list[str], gold: dict[str, list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The reviewer's feedback on each result, and counts of what it held."""
    from fineloop.tasks.ner.spans import Span, corrected_spans

    events, counts = [], {"confirmations": 0, "corrections": 0}
    for result, text in zip(results, texts, strict=True):
        right = gold[text]
        edits = edits_between(result["spans"], right)
        if not edits:
            counts["confirmations"] += 1
            events.append(
                {"kind": "label", "interaction_id": result["interaction_id"], "spans": right}
            )
            continue
        resolved = corrected_spans({"spans": result["spans"]}, {"edits": edits})
        assert resolved == sorted(Span(g["start"], g["end"], g["label"]) for g in right), text
        counts["corrections"] += 1
        for edit in edits:
            counts[edit["op"]] = counts.get(edit["op"], 0) + 1
        events.append(
            {
                "kind": "correction",
                "interaction_id": result["interaction_id"],
                "output": {"edits": edits},
            }
        )
    return events, counts


def extract(client: Client, sentences: list[Sentence]) -> tuple[list[dict[str, Any]], float]:
    """Served results for the sentences' texts (logged as interactions), and seconds."""
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for first in range(0, len(sentences), BATCH):
        texts = [s.text for s in sentences[first : first + BATCH]]
        results += client.extract(PROJECT, texts)["results"]
    return results, time.perf_counter() - started


def served_tags(sentences: list[Sentence], results: list[dict[str, Any]]) -> list[list[str]]:
    return [tags_from_spans(s, r["spans"]) for s, r in zip(sentences, results, strict=True)]


def run_job(client: Client) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    job = client.train(PROJECT)
    done = client.wait(job["id"], timeout=JOB_TIMEOUT_S, poll=1.0)
    if done["state"] != "succeeded":
        tail = "\n".join(str(e.get("message")) for e in client.job_events(job["id"])[-15:])
        raise RuntimeError(f"job {job['id']} {done['state']}: {done.get('error')}\n{tail}")
    return done, time.perf_counter() - started


def slices(train: list[Sentence], seed: int) -> tuple[list[Sentence], ...]:
    """10% / 20% / 20% of the (distinct) train sentences, shuffled with `seed`."""
    order = list(train)
    random.Random(seed).shuffle(order)
    n = len(order)
    a, b = round(0.1 * n), round(0.3 * n)
    return order[:a], order[a:b], order[b : round(0.5 * n)]


def feedback_case(
    train: list[Sentence], test: list[Sentence], overrides: dict[str, Any], plain: dict[str, Any]
) -> dict[str, Any]:
    """Run the loop (module doc); the case's JSON entry."""
    seed_part, reviewed, later = slices(train, overrides.get("seed", 13))
    gold = gold_spans(reviewed + later)
    work = Path(tempfile.mkdtemp(prefix="ner-loop-"))
    notes: dict[str, Any] = {"slices": [len(seed_part), len(reviewed), len(later)]}
    with running_server() as server, Client(server.url, timeout=900) as client:
        client.create_project(
            PROJECT, "ner", base_model=minilm_path(), task_options={"entity_types": WNUT_TYPES}
        )
        client.update_project(PROJECT, training_policy={"train": overrides, "auto_promote": True})
        (work / "seed.conll").write_bytes(to_conll(seed_part))
        notes["import"] = client.import_file(PROJECT, "feedback", work / "seed.conll", "conll")
        print(f"[feedback] imported {len(seed_part)} texts; job 1 ...", flush=True)
        job1, notes["job1_s"] = run_job(client)
        notes["job1"] = _job_summary(job1)
        if client.aliases(PROJECT).get("champion") != job1["result"]["version"]:
            client.promote(PROJECT, job1["result"]["version"], force=True, reason="bench")
            notes["job1_forced_promotion"] = True
        v1 = client.version(PROJECT, job1["result"]["version"])["artifact_uri"]

        print(f"[feedback] v1 serves; reviewing {len(reviewed)} extractions ...", flush=True)
        shown, notes["extract_reviewed_s"] = extract(client, reviewed)
        notes["shown_f1_reviewed"] = score(reviewed, served_tags(reviewed, shown))["metrics"]
        events, notes["review"] = review(shown, [s.text for s in reviewed], gold)
        client.send_feedback_batch(PROJECT, events)

        print(f"[feedback] memory alone on the next {len(later)} texts and test ...", flush=True)
        time.sleep(3.0)  # the gazetteer refresh after the hook (serving waits ≤ 2 s)
        memory_later, _ = extract(client, later)
        memory_test, _ = extract(client, test)
        v1_later = score(later, predict_tags(v1, later))
        v1_test = score(test, predict_tags(v1, test))
        mem_later = score(later, served_tags(later, memory_later))
        mem_test = score(test, served_tags(test, memory_test))
        notes["memory_spans_test"] = sum(
            1 for r in memory_test for s in r["spans"] if s.get("source") == "memory"
        )

        print("[feedback] job 2 (retrain from v1) ...", flush=True)
        job2, notes["job2_s"] = run_job(client)
        notes["job2"] = _job_summary(job2)
        v2 = client.version(PROJECT, job2["result"]["version"])["artifact_uri"]
        v2_test = score(test, predict_tags(v2, test))

        print("[feedback] plain: v1 continued on the gold 10% + 20% ...", flush=True)
        plain_spec = plain | {
            "base": v1,
            "train": str(work / "plain-train.json"),
            "test": str(work / "test.json"),
            "work": str(work / "plain"),
        }
        save_sentences(work / "plain-train.json", seed_part + reviewed)
        save_sentences(work / "test.json", test)
        (work / "plain.json").write_text(json.dumps(plain_spec))
        plain_run = run_child("ner_plain.py", [str(work / "plain.json")], timeout=3600)
        plain_test = score(test, plain_run["tags"])

    f1 = {
        "v1": v1_test,
        "v2": v2_test,
        "plain": plain_test,
    }
    return {
        "case": "feedback simulation (WNUT-17 train: 10% imported, 20% reviewed, 20% later)",
        "base": v1_test["metrics"] | {"later_f1": v1_later["metrics"]["f1"]},
        "fineloop": v2_test["metrics"]
        | {"gate_passed": bool(job2["result"]["gate"].get("passed"))}
        | {"promoted": bool(job2["result"].get("promoted"))},
        "fineloop_memory": {
            "later": mem_later["metrics"],
            "test": mem_test["metrics"],
        },
        "base_later": v1_later["metrics"],
        "plain": plain_test["metrics"] | {"fit_s": plain_run["fit_s"], "rows": plain_run["rows"]},
        "differences": {
            "fineloop_minus_base_f1_test": bootstrap_f1_difference(
                v2_test["counts"], v1_test["counts"]
            ),
            "memory_minus_model_f1_later": bootstrap_f1_difference(
                mem_later["counts"], v1_later["counts"]
            ),
            "memory_minus_model_f1_test": bootstrap_f1_difference(
                mem_test["counts"], v1_test["counts"]
            ),
            "fineloop_minus_plain_f1_test": bootstrap_f1_difference(
                v2_test["counts"], plain_test["counts"]
            ),
        },
        "per_type_f1_test": {k: v["per_type_f1"] for k, v in f1.items()},
        "notes": notes,
    }


def _job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """Version, gate and the job's own test-split scores (primary metrics only)."""
    result = job.get("result") or {}
    metrics = result.get("metrics") or {}
    keep = ("f1", "precision", "recall", "texts")
    return {
        "version": result.get("version"),
        "promoted": result.get("promoted"),
        "gate": {k: v for k, v in (result.get("gate") or {}).items() if k != "interval"},
        "test_split_texts": metrics.get("examples"),
        "scores": {
            side: {k: metrics[side][k] for k in keep if k in metrics[side]}
            for side in ("base", "champion", "candidate")
            if isinstance(metrics.get(side), dict)
        },
        "message": job.get("message"),
    }

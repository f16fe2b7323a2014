"""Object selection: "select the walls" over a building model, learning from picks.

Runs end to end through the SDK against a running `fineloop serve`:
1. an embedding project holds the objects of a small building (walls, doors, windows,
   slabs, columns, beams, ...) with their category and level as metadata;
2. for each category, the user asks in words ("select the walls"); `select` answers with the
   objects it is confident about plus the next candidates; the user keeps the right ones
   (also among the candidates) and removes the wrong ones — that answer is feedback;
3. instant adaptation: the very next request (a paraphrase, then the first phrasing again)
   already returns a better set, with no retraining;
4. a training job fine-tunes the model on those selections and gates it;
5. a phrasing no one answered is asked of the old and the new model with adaptation
   switched off (the model alone), then with it on.

    fineloop serve                                # in one terminal
    python examples/object_selection/run.py       # in another (--url to point elsewhere)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fineloop import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_server import free_name

DATA = Path(__file__).with_name("data.json")
TRAINING = {"epochs": 8, "batch_size": 16, "learning_rate": 5e-5}  # a few dozen examples


def main() -> None:
    parser = argparse.ArgumentParser(description="Object selection, end to end.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="fineloop server URL.")
    parser.add_argument("--project", default="building", help="Project name (a free variant "
                        "is used when it exists).")  # fmt: skip
    args = parser.parse_args()
    data = json.loads(DATA.read_text())
    objects, requests = data["objects"], data["requests"]
    right = {c: {o["id"] for o in objects if o["category"] == c} for c in requests}

    with Client(args.url, timeout=600) as client:
        project = free_name(client, args.project)
        client.create_project(project, "embedding", description="BIM objects by request.")
        client.update_project(project, training_policy={"train": TRAINING})
        client.upsert_items(
            project,
            [
                {
                    "id": o["id"],
                    "text": o["text"],
                    "metadata": {k: o[k] for k in ("category", "level")},
                }
                for o in objects
            ],
        )
        print(f"project {project!r}: {len(objects)} objects\n")
        unseen = {c: phrasings[2] for c, phrasings in requests.items()}
        before = {c: ask(client, project, q, right[c]) for c, q in unseen.items()}

        print("Two rounds of feedback per category (P = precision, R = recall of `select`):")
        for category, phrasings in requests.items():
            for round_no, query in enumerate(phrasings[:2], start=1):
                answer = client.select(project, query)
                report(f"round {round_no}", query, answer, right[category])
                respond(client, project, answer, right[category])
            again = client.select(project, phrasings[0])
            report("after", phrasings[0], again, right[category])
        print()

        adapted = {c: ask(client, project, q, right[c]) for c, q in unseen.items()}
        job = client.train(project)
        print(f"training job {job['id']} queued")
        done = follow(client, job["id"])
        result = done["result"] or {}
        print(f"  {done['message']}\n  gate: {result.get('gate', {}).get('reason')}\n")
        version = done["version"]

        # The same feedback calibrates both versions' scores (refit now rather than wait
        # for the background refit), then the models are compared without adaptation.
        for side in ("v0", version):
            fitted = client.refit_calibration(project, version=side)
            print(f"calibration of {side}: {fitted['method']} on {fitted['samples']} judged items")
        client.update_project(project, serving_policy={"online_adaptation": False})
        alone = {
            side: {c: ask(client, project, q, right[c], version=side) for c, q in unseen.items()}
            for side in ("v0", version)
        }
        client.update_project(project, serving_policy={"online_adaptation": True})
        both = {c: ask(client, project, q, right[c], version=version) for c, q in unseen.items()}
        summary(unseen, before, adapted, alone["v0"], alone[version], both, version)


def respond(client: Client, project: str, answer: dict[str, Any], right: set[str]) -> None:
    """The user keeps the right objects among everything shown and drops the wrong ones."""
    keep = [c["id"] for c in answer["candidates"] if c["id"] in right]
    drop = [hit["id"] for hit in answer["items"] if hit["id"] not in right]
    client.selection(project, answer["interaction_id"], keep, rejected=drop)


def scores(answer: dict[str, Any], right: set[str]) -> tuple[float, float, int]:
    chosen = {hit["id"] for hit in answer["items"]}
    hits = len(chosen & right)
    return (hits / len(chosen) if chosen else 0.0), hits / len(right), len(chosen)


def report(label: str, query: str, answer: dict[str, Any], right: set[str]) -> None:
    precision, recall, count = scores(answer, right)
    flag = " (adapted)" if answer["adapted"] else ""
    print(
        f"  {label:8s} {query!r:42s} selected {count:2d} of {len(right)} right: "
        f"P {precision:.2f} R {recall:.2f}{flag}"
    )


def ask(
    client: Client, project: str, query: str, right: set[str], version: str | None = None
) -> tuple[float, float, int]:
    return scores(client.select(project, query, version=version), right)


def follow(client: Client, job_id: int) -> dict[str, Any]:
    last = ""
    while True:
        job = client.job(job_id)
        line = f"  {job['state']:9s} {job['progress']:4.0%}  {job['message'] or ''}"
        if line != last:
            print(line, flush=True)
            last = line
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if job["state"] != "succeeded":
                raise SystemExit(f"training {job['state']}: {job['error']}")
            return job
        time.sleep(1.0)


def summary(unseen: dict[str, str], *columns: Any) -> None:
    *tables, version = columns
    heads = ["v0", "v0+fb", "v0 alone", f"{version} alone", f"{version}+fb"]
    print("Phrasings never answered, P/R of `select` (fb = instant adaptation on):")
    print(f"{'request':40s} " + " ".join(f"{h:>11s}" for h in heads))
    for category, query in unseen.items():
        cells = [f"{t[category][0]:.2f}/{t[category][1]:.2f}" for t in tables]
        print(f"{query[:40]:40s} " + " ".join(f"{c:>11s}" for c in cells))
    means = []
    for table in tables:
        p = sum(v[0] for v in table.values()) / len(table)
        r = sum(v[1] for v in table.values()) / len(table)
        means.append(f"{p:.2f}/{r:.2f}")
    print(f"{'mean':40s} " + " ".join(f"{m:>11s}" for m in means))


if __name__ == "__main__":
    main()

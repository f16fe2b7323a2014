"""A self-driving loop: feedback starts training, the gate promotes, an A/B test decides.

Runs end to end through the SDK against `fineloop serve` (started here on a free port in a
temporary folder, or yours with --url), on Banking77: 77 intents of online-banking
customers are the items, customers' messages are the searches.
1. an embedding project (base: the packaged all-MiniLM-L6-v2) whose training policy says:
   train after N new feedback events (trigger), promote a candidate that passes the gate,
   and POST a webhook when a job ends or the champion moves (to a receiver this script runs);
2. simulated customers search (top 10) and answer: the right intent picked when shown (the
   other nine rejected), else the ten rejected and a label event naming the right one.
   Nobody calls train: the trigger starts the job, followed here live over Server-Sent
   Events, and the gate decides whether v1 replaces v0;
3. auto_promote off, more customers, the trigger trains v2, which stays a candidate;
4. a rollout sends half the customers (sticky by user id) to v2 and half to the champion;
   the rollout policy compares how often each one's first result is picked and promotes v2,
   rolls it back, or holds, with the test in the history;
5. every version is scored on held-out Banking77 test messages (top-1 accuracy).

    python examples/self_driving_loop/run.py            # starts its own server (~7 min)
    python examples/self_driving_loop/run.py --url URL  # or uses a running one
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from fineloop import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_server import free_name, free_port, local_server

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "banking77"
K = 10
TRIGGER = {"feedback_count": 300, "debounce_seconds": 5}
SECOND = 600  # feedback events the second round waits for
# A few hundred examples per job: a higher rate than the default (made for thousands).
# A job takes about a minute on 2 CPU cores.
TRAINING = {"epochs": 3, "learning_rate": 5e-5}
ROLLOUT_POLICY = {"min_samples": 150, "alpha": 0.05, "debounce_seconds": 5}
START = time.monotonic()
WEBHOOKS: queue.Queue[dict[str, Any]] = queue.Queue()


def main() -> None:
    parser = argparse.ArgumentParser(description="A self-driving feedback loop, end to end.")
    parser.add_argument("--url", help="A running fineloop server (default: start one here).")
    parser.add_argument("--project", default="banking", help="Project name (a free variant "
                        "is used when it exists).")  # fmt: skip
    parser.add_argument("--data", type=Path, default=DATA, help="The banking77 folder.")
    parser.add_argument("--ab", type=int, default=1200, help="At most this many A/B searches.")
    parser.add_argument("--test-per-intent", type=int, help="Score the versions on this "
                        "many test messages per intent (default: all 3,080).")  # fmt: skip
    parser.add_argument("--ab-adaptation", action="store_true", help="Keep instant "
                        "adaptation on during the A/B test.")  # fmt: skip
    args = parser.parse_args()
    items, train, test = banking77(args.data, args.test_per_intent)
    random.Random(7).shuffle(train)
    pool = iter(train)  # each training message is sent once, by one customer

    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_server())
        hook = stack.enter_context(webhook_receiver())
        client = stack.enter_context(Client(url, timeout=600))
        project = free_name(client, args.project)
        client.create_project(project, "embedding", description="Banking77 intents.")
        policy = {"train": TRAINING, "trigger": TRIGGER, "auto_promote": True, "webhook_url": hook}
        client.update_project(project, training_policy=policy)
        client.upsert_items(project, [{"id": i, "text": t} for i, t in items.items()])
        print(f"project {project!r}: {len(items)} intents; training policy {json.dumps(policy)}\n")

        print("Round 1: customers search and answer until the trigger fires; nobody calls train")
        job = customers(client, project, pool, after=0)
        v1 = follow(client, job)
        wait_until_served(client, project, v1, train[0][0])

        # From now on a candidate waits for the A/B test, and a retraining for more feedback.
        policy |= {"auto_promote": False, "trigger": TRIGGER | {"feedback_count": SECOND}}
        client.update_project(project, training_policy=policy)
        print(f"\nRound 2: auto_promote off, trigger after {SECOND} new feedback events")
        v2 = follow(client, customers(client, project, pool, after=job))

        policy["trigger"] = TRIGGER | {"feedback_count": None}  # two fixed versions under test
        client.update_project(project, training_policy=policy)
        # Instant adaptation re-ranks both variants from the same pool of feedback, which
        # narrows the difference between the models: off for the test (and the scores).
        client.update_project(project, serving_policy={"online_adaptation": args.ab_adaptation})
        champion = client.aliases(project)["champion"]
        if v2 != champion:
            adapt = "on" if args.ab_adaptation else "off"
            print(f"\nA/B test, instant adaptation {adapt}: champion ({champion}) 50% / {v2} 50%")
            rollout(client, project, v2, list(itertools.islice(pool, args.ab)))
        client.update_project(project, serving_policy={"online_adaptation": False})
        scores(client, project, test, [f"v{n}" for n in range(int(v2[1:]) + 1)])
        client.update_project(project, serving_policy={"online_adaptation": True})
        print("\nchampion history:")
        for move in client.alias_history(project, "champion"):
            print(f"  -> {move['version']} by {move['actor']}: {move['reason']}")
        print("jobs: " + "; ".join(f"{j['id']} {j['state']} {j['message']}"
                                   for j in reversed(client.jobs(project))))  # fmt: skip
        show_webhooks(wait=0)


def banking77(
    folder: Path, test_per_intent: int | None
) -> tuple[dict[str, str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Items (intent -> readable name), training messages, held-out test messages."""
    intents = json.loads((folder / "categories.json").read_text())
    items = {intent: intent.replace("_", " ") for intent in intents}

    def rows(name: str) -> list[tuple[str, str]]:
        with (folder / name).open(newline="") as handle:
            return [(row["text"].strip(), row["category"]) for row in csv.DictReader(handle)]

    taken: dict[str, int] = {}
    test = []
    for message, intent in rows("test.csv"):
        taken[intent] = taken.get(intent, 0) + 1
        if test_per_intent is None or taken[intent] <= test_per_intent:
            test.append((message, intent))
    return items, rows("train.csv"), test


def say(text: str) -> None:
    print(f"  [{time.monotonic() - START:4.0f}s] {text}", flush=True)


def answer(client: Client, project: str, message: str, right: str, user: str | None = None) -> Any:
    """One customer: search, then pick the right intent or reject all ten and label it."""
    found = client.search(project, message, k=K, user_id=user)
    shown = [hit["id"] for hit in found["items"]]
    if right in shown:
        others = [item for item in shown if item != right]
        client.selection(project, found["interaction_id"], [right], rejected=others)
    else:
        client.selection(project, found["interaction_id"], [], rejected=shown)
        client.send_feedback(project, {"kind": "label", "input": message, "items": [right]})
    return found, shown


def customers(client: Client, project: str, pool: Iterator[tuple[str, str]], after: int) -> int:
    """Customers come one after another until the trigger has created a training job."""
    first = shown_at_all = events = n = 0
    served: dict[str, int] = {}
    for n, (message, right) in enumerate(pool, start=1):
        found, shown = answer(client, project, message, right)
        served[found["model_version"]] = served.get(found["model_version"], 0) + 1
        first += shown[0] == right
        shown_at_all += right in shown
        events += 1 if right in shown else 2
        if n % 10 == 0 and (jobs := [j for j in client.jobs(project, limit=5) if j["id"] > after]):
            break
    else:
        raise SystemExit("no training job was triggered before the messages ran out")
    say(
        f"{n} searches (served by {served}): right intent first {first}, in the top {K} "
        f"{shown_at_all}, not shown {n - shown_at_all}; {events} feedback events"
    )
    say(f"job {jobs[-1]['id']} ({jobs[-1]['kind']}) created by the trigger; its events:")
    return int(jobs[-1]["id"])


def follow(client: Client, job_id: int) -> str:
    """Follow the job over SSE to its end; the version it registered."""
    stream(client, job_id)
    job = client.wait(job_id)
    if job["state"] != "succeeded":
        raise SystemExit(f"job {job_id} {job['state']}: {job['error']}")
    gate = (job["result"] or {}).get("gate", {})
    say(f"job {job_id} {job['state']}: {job['message']}")
    print(f"         gate: passed={gate.get('passed')}: {gate.get('reason')}")
    show_webhooks(wait=15, until="job.finished")
    return str(job["version"])


def stream(client: Client, job_id: int) -> None:
    """Server-Sent Events of the job: state changes, log lines and progress."""
    shown = -1.0
    headers = {"Accept": "text/event-stream"}
    if os.environ.get("FINELOOP_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['FINELOOP_API_KEY']}"
    timeout = httpx.Timeout(10.0, read=120.0)
    with httpx.stream(
        "GET", f"{client.url}/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
    ) as response:
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data = json.loads(line.removeprefix("data:"))
                if kind in ("state", "log"):
                    say(f"{kind:5s} {data['message']}")
                elif kind == "progress" and data["progress"] >= shown + 0.25:
                    shown = data["progress"]
                    say(f"{data['progress']:4.0%}  {data['message']}")


def wait_until_served(client: Client, project: str, version: str, probe: str) -> None:
    """A promoted version's index is built in the background; the old one answers meanwhile."""
    if client.aliases(project).get("champion") != version:
        return
    deadline = time.monotonic() + 120
    while client.search(project, probe, k=1)["model_version"] != version:
        if time.monotonic() > deadline:
            raise SystemExit(f"{version} was promoted but is not serving after 120 s")
        time.sleep(0.5)
    say(f"{version} is the champion and serves searches now")


def rollout(client: Client, project: str, challenger: str, pairs: list[tuple[str, str]]) -> None:
    client.search(project, pairs[0][0], k=1, version=challenger)  # builds its index first
    variants = [
        {"name": "champion", "target": "champion", "weight": 1},
        {"name": "challenger", "target": challenger, "weight": 1},
    ]
    passed = client.version(project, challenger)["gate"].get("passed")
    reason = f"A/B test of {challenger} (offline gate passed: {passed}) against the champion"
    client.set_rollout(project, variants, policy=ROLLOUT_POLICY, reason=reason)
    print(f"  rollout policy {json.dumps(ROLLOUT_POLICY)}; 200 customers, sticky by user id")
    users = random.Random(11)
    seen: dict[str, set[str]] = {}
    state: dict[str, Any] = {}
    for n, (message, right) in enumerate(pairs, start=1):
        user = f"customer-{users.randrange(200):03d}"
        found, _ = answer(client, project, message, right, user=user)
        if found.get("variant"):
            seen.setdefault(user, set()).add(found["variant"])
        if n % 150 == 0 or n == len(pairs):
            state = client.rollout(project)
            say(f"{n} searches: " + "; ".join(metric(m) for m in state["metrics"]) + test(state))
            if not state["active"]:
                break
    switched = sum(len(variants) > 1 for variants in seen.values())
    say(f"{len(seen)} customers served by the rollout, {switched} of them by both variants")
    if state.get("active"):
        actions = client.evaluate_rollout(project)["actions"]
        say(f"policy run at the end: {actions or 'no action (no significant difference)'}")
        client.end_rollout(project, reason=f"example over after {len(pairs)} searches")
    print("  rollout history:")
    for entry in client.rollout(project)["history"]:
        print(f"    {entry['action']:9s} by {entry['actor'] or '-'}: {entry['reason']}")
    show_webhooks(wait=10, until="promotion")


def metric(row: dict[str, Any]) -> str:
    rate = row["acceptance_rate"]
    if rate is None:
        return f"{row['variant']} no feedback yet"
    return (
        f"{row['variant']} {row['accepted']}/{row['judged']} = {rate:.2f} "
        f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    )


def test(state: dict[str, Any]) -> str:
    c = state.get("comparison")
    if not c or c["p_value"] is None:
        return ""
    return f"; p = {c['p_value']:.3g}" + (" (significant)" if c["significant"] else "")


def scores(client: Client, project: str, pairs: list[tuple[str, str]], versions: list[str]) -> None:
    """Top-1 accuracy, recall@10 and MRR on held-out messages (instant adaptation is off)."""
    print(f"\nHeld-out Banking77 test messages ({len(pairs)}, never searched before), model alone:")
    for version in versions:
        ranks = []
        for message, right in pairs:
            found = client.search(project, message, k=K, version=version)
            shown = [hit["id"] for hit in found["items"]]
            ranks.append(shown.index(right) + 1 if right in shown else None)
        top1 = sum(r == 1 for r in ranks) / len(ranks)
        recall = sum(r is not None for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        print(f"  {version}: top-1 accuracy {top1:.3f}   recall@{K} {recall:.3f}   MRR {mrr:.3f}")


def show_webhooks(wait: float, until: str | None = None) -> None:
    """Print what the receiver got; wait up to `wait` s for an `until` event."""
    deadline = time.monotonic() + wait
    while True:
        try:
            payload = WEBHOOKS.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return
        if payload["event"] == "job.finished":
            detail = f"job {payload['job_id']} {payload['state']}: {payload['message']}"
        else:
            detail = f"{payload['alias']} {payload['previous']} -> {payload['version']}"
            detail += f" by {payload['actor']}"
        say(f"webhook {payload['event']} ({payload['delivery']}): {detail}")
        if payload["event"] == until:
            until = None
            deadline = time.monotonic() + 1.0  # a promotion comes with its job's ending


@contextlib.contextmanager
def webhook_receiver() -> Iterator[str]:
    """A tiny HTTP server that queues every JSON payload POSTed to it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            WEBHOOKS.put(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fineloop"
    print(f"webhook receiver on {url}")
    try:
        yield url
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()

"""An assistant that gets better from its own users: generations, edits, thumbs and A-vs-B
choices become a LoRA adapter that is trained, gated and served by itself.

Runs against `fineloop serve` (started here on a free port in a temporary folder, or yours
with --url). The app is a plain OpenAI client pointed at fineloop; users are simulated from
Self-Instruct's human-written seed tasks (instruction + reference answer):
1. a generation project on the default base (SmolLM2-135M-Instruct, prepared from the
   packaged GGUF the first time it loads) with a training policy: train after 50
   qualifying feedback events, promote a candidate that passes the gate;
2. the app asks `/v1/chat/completions` for each instruction; the simulated user
   - edits the reply into the reference answer (a correction: SFT + a preference pair),
   - or thumbs it (up when it is close to the reference, else down: KTO),
   - or is shown two drafts (two sampled replies) and picks the closer one (DPO);
3. the trigger starts a training job; the script follows it (methods chosen, gate) and
   then asks again: the next generations come from whichever version is champion.

    python examples/assistant_feedback/run.py            # its own server (~10 min on 2 cores)
    python examples/assistant_feedback/run.py --url URL  # or a running one
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from openai import OpenAI
from rapidfuzz import fuzz

from fineloop import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_server import free_name, local_server

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "self-instruct"
TRIGGER = {"feedback_count": 50, "debounce_seconds": 5}
TRAINING = {"epochs": 2, "max_length": 384, "lora_r": 8, "learning_rate": 3e-4}
MAX_TOKENS = 96
CLOSE = 45  # edit similarity (0-100) above which a reply earns a thumbs-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running fineloop server (default: start one)")
    parser.add_argument("--data", type=Path, default=DATA / "seed_tasks.jsonl")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    tasks = seed_tasks(args.data)
    rng = random.Random(args.seed)
    rng.shuffle(tasks)
    train_tasks, held_out = tasks[:-12], tasks[-12:]
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_server())
        client = stack.enter_context(Client(url, timeout=600))
        app = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=30, timeout=600)
        project = free_name(client, "assistant")
        client.create_project(project, "generation", description="Self-Instruct assistant.")
        policy = {"trigger": TRIGGER, "auto_promote": True, "train": TRAINING}
        client.update_project(project, training_policy=policy)
        say(f"project {project}: the first reply waits for SmolLM2 to be prepared and loaded")
        before = replies(app, project, held_out)
        job = users(client, app, project, train_tasks, rng)
        outcome = follow(client, job["id"])
        champion = client.aliases(project)["champion"]
        say(f"champion now {champion}; asking the held-out instructions again")
        wait_until_served(app, project, champion, held_out[0]["prompt"])
        after = replies(app, project, held_out)
        say(f"job {outcome['id']}: {outcome['message']}")
        compare(held_out, before, after)


def seed_tasks(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        task = json.loads(line)
        instance = task["instances"][0]
        prompt = task["instruction"] + (f"\n\n{instance['input']}" if instance["input"] else "")
        rows.append({"prompt": prompt, "reference": instance["output"]})
    return rows


def ask(app: OpenAI, project: str, prompt: str, **sampling: Any) -> Any:
    return app.chat.completions.create(
        model=project,
        messages=[{"role": "user", "content": prompt}],
        **({"temperature": 0, "max_tokens": MAX_TOKENS} | sampling),
    )


def users(
    client: Client, app: OpenAI, project: str, tasks: list[dict[str, str]], rng: random.Random
) -> dict[str, Any]:
    """Simulated users answer until the trigger has started a training job."""
    sent = 0
    for task in tasks * 3:
        reply = ask(app, project, task["prompt"])
        interaction = reply.id.removeprefix("chatcmpl-")
        text = reply.choices[0].message.content or ""
        roll = rng.random()
        if roll < 0.4:
            event = {
                "kind": "correction",
                "interaction_id": interaction,
                "output": task["reference"],
            }
        elif roll < 0.75:
            close = fuzz.ratio(text, task["reference"]) >= CLOSE
            event = {
                "kind": "thumb",
                "interaction_id": interaction,
                "value": "up" if close else "down",
            }
        else:
            drafts = [ask(app, project, task["prompt"], temperature=1.0, seed=s) for s in (1, 2)]
            texts = [d.choices[0].message.content or "" for d in drafts]
            if texts[0] == texts[1]:
                continue
            best = max(range(2), key=lambda i: fuzz.ratio(texts[i], task["reference"]))
            ids = [d.id.removeprefix("chatcmpl-") for d in drafts]
            event = {
                "kind": "preference",
                "chosen_interaction_id": ids[best],
                "rejected_interaction_id": ids[1 - best],
            }
        client.send_feedback(project, event)
        sent += 1
        if sent % 10 == 0:
            say(f"{sent} feedback events sent (last: {event['kind']})")
            jobs = client.jobs(project, limit=1)
            if jobs:
                say(f"the trigger started job {jobs[0]['id']} after {sent} events")
                return jobs[0]
    raise SystemExit("the trigger never fired; is the server's trigger loop running?")


def follow(client: Client, job_id: int) -> dict[str, Any]:
    """Print the job's progress lines until it ends."""
    last = ""
    while True:
        job = client.job(job_id)
        line = f"  {job['state']:9s} {job['progress']:4.0%}  {job['message'] or ''}"
        if line != last:
            say(line)
            last = line
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if job["state"] != "succeeded":
                raise SystemExit(f"training {job['state']}: {job['error']}")
            return job
        time.sleep(2.0)


def wait_until_served(app: OpenAI, project: str, version: str, probe: str) -> None:
    """A promoted adapter loads in the background while the old version answers."""
    deadline = time.monotonic() + 300
    while ask(app, project, probe, max_tokens=1).model != f"{project}:{version}":
        if time.monotonic() > deadline:
            raise SystemExit(f"{version} is the champion but not serving after 300 s")
        time.sleep(1.0)


def replies(app: OpenAI, project: str, tasks: list[dict[str, str]]) -> list[tuple[str, str]]:
    answers = []
    for task in tasks:
        done = ask(app, project, task["prompt"])
        answers.append((done.model, done.choices[0].message.content or ""))
    return answers


def compare(
    tasks: list[dict[str, str]], before: list[tuple[str, str]], after: list[tuple[str, str]]
) -> None:
    """Edit similarity of each held-out reply to the reference, before and after."""
    old = [fuzz.ratio(text, t["reference"]) for (_, text), t in zip(before, tasks, strict=True)]
    new = [fuzz.ratio(text, t["reference"]) for (_, text), t in zip(after, tasks, strict=True)]
    say(f"held-out similarity to the reference: {before[0][0]} {sum(old) / len(old):.1f}")
    say(f"                                      {after[0][0]} {sum(new) / len(new):.1f}")
    say(f"example: {tasks[0]['prompt'][:80]!r}\n  before: {before[0][1][:160]!r}")
    say(f"  after:  {after[0][1][:160]!r}")


START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {text}", flush=True)


if __name__ == "__main__":
    main()

"""Instant adaptation: precision and recall of `select` after 0-3 rounds of user feedback.

The scenario (built from Banking77): the catalog is 72 customer messages, the first 6
training utterances of 12 intents that are easy to confuse (card arrival vs delivery
estimate, card not working vs declined payment, failed vs pending top-up, ...). A request
names one intent in words ("select the messages about being charged twice"); its right set
is that intent's 6 messages — k = 6 right of n = 72. Each of the 12 requests also has a
hand-written paraphrase ("show me the messages about a double charge"), whose cosine to the
request under MiniLM is reported (adaptation uses past queries at cosine >= 0.75, the
serving policy's default).

A round: `select(request)` through the SDK (default threshold 0.5 on the calibrated
probability), then the simulated user answers on that interaction: selects the right
messages among the candidates shown and rejects the wrong ones fineloop had selected.
Measured after r = 0, 1, 2, 3 rounds: the answered request itself ("same") and its
paraphrase, never answered ("paraphrase"). Each request runs in its own project, so
requests do not learn from each other. Sides:
- fineloop: the default serving policy (instant adaptation on);
- base: the same model and server with `serving_policy.online_adaptation = false`
  (calibration still refits on the feedback);
- plain: the bare sentence-transformers model, no fineloop: the items with cosine >= 0.55
  (where fineloop's default calibration says p = 0.5), and, as a reference, the top 6 by
  cosine (an app that knew the size of the right set).

    .venv/bin/python bench/online_adaptation.py            # ~2 min
    .venv/bin/python bench/online_adaptation.py --quick    # 4 requests
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from common import machine_facts, print_table, running_server, write_results
from embedding_common import create_project, minilm_path
from fineloop import Client
from shared_data import DATASETS

ROUNDS = 3
GOAL = 0.95
PLAIN_COSINE = 0.55
REQUESTS = {
    "card_arrival": (
        "select the messages from customers whose card has not arrived yet",
        "show me the messages from people still waiting for their card to arrive",
    ),
    "card_delivery_estimate": (
        "select the questions about when a card will be delivered",
        "show me the questions asking when the card gets delivered",
    ),
    "lost_or_stolen_card": (
        "select the messages reporting a lost or stolen card",
        "show me the messages where a card was lost or stolen",
    ),
    "card_not_working": (
        "select the messages saying the card is broken or not working",
        "show me the messages complaining that the card does not work",
    ),
    "card_swallowed": (
        "select the messages about an ATM that kept the card",
        "show me the messages where the ATM did not give the card back",
    ),
    "pin_blocked": (
        "select the messages about a PIN blocked after too many wrong attempts",
        "show me the messages where the PIN is blocked after entering it wrong",
    ),
    "change_pin": (
        "select the questions about changing a PIN",
        "show me the questions on how to change the PIN",
    ),
    "top_up_failed": (
        "select the messages saying a top-up failed",
        "show me the messages where a top-up did not go through",
    ),
    "pending_top_up": (
        "select the messages about a top-up that is still pending",
        "show me the messages asking why a top-up is still pending",
    ),
    "request_refund": (
        "select the requests for a refund",
        "show me the messages asking for a refund",
    ),
    "transaction_charged_twice": (
        "select the messages about being charged twice",
        "show me the messages about a double charge",
    ),
    "declined_card_payment": (
        "select the messages about a declined card payment",
        "show me the messages where a card payment was declined",
    ),
}


def catalog(per_intent: int) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Item id -> message text, and intent -> ids of its messages."""
    items: dict[str, str] = {}
    right: dict[str, set[str]] = {intent: set() for intent in REQUESTS}
    with (DATASETS / "banking77" / "train.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            intent = row["category"]
            if intent in right and len(right[intent]) < per_intent:
                item_id = f"{intent}-{len(right[intent])}"
                items[item_id] = row["text"].strip()
                right[intent].add(item_id)
    return items, right


def scores(selected: list[str], right: set[str]) -> dict[str, float]:
    hits = len(set(selected) & right)
    return {
        "precision": hits / len(selected) if selected else 0.0,
        "recall": hits / len(right),
        "selected": float(len(selected)),
        "exact": float(set(selected) == right),
    }


def run_requests(
    client: Client, side: str, intents: list[str], items: dict[str, str], right: dict[str, set[str]]
) -> dict[str, list[list[dict[str, float]]]]:
    """track -> round -> one score dict per request."""
    policy = {"online_adaptation": side == "fineloop"}
    out: dict[str, list[list[dict[str, float]]]] = {
        "same": [[] for _ in range(ROUNDS + 1)],
        "paraphrase": [[] for _ in range(ROUNDS + 1)],
    }
    for intent in intents:
        project = f"{side}-{intent}".replace("_", "-")
        create_project(client, project, items, base_model=minilm_path(), serving_policy=policy)
        request, paraphrase = REQUESTS[intent]
        wanted = right[intent]
        for round_no in range(ROUNDS + 1):
            answer = client.select(project, request)
            other = client.select(project, paraphrase)
            out["same"][round_no].append(scores([h["id"] for h in answer["items"]], wanted))
            out["paraphrase"][round_no].append(scores([h["id"] for h in other["items"]], wanted))
            if round_no < ROUNDS:
                shown = [c["id"] for c in answer["candidates"]]
                picked = [item for item in shown if item in wanted]
                wrong = [h["id"] for h in answer["items"] if h["id"] not in wanted]
                client.selection(project, answer["interaction_id"], picked, rejected=wrong)
    return out


def plain_side(
    intents: list[str], items: dict[str, str], right: dict[str, set[str]]
) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path())
    ids = list(items)
    vectors = model.encode([items[i] for i in ids], normalize_embeddings=True)
    out: dict[str, Any] = {}
    similarity = {}
    for track, position in (("same", 0), ("paraphrase", 1)):
        texts = [REQUESTS[intent][position] for intent in intents]
        queries = model.encode(texts, normalize_embeddings=True)
        cosine = queries @ vectors.T
        threshold, top = [], []
        for n, intent in enumerate(intents):
            order = np.argsort(-cosine[n])
            threshold.append(
                scores([ids[j] for j in order if cosine[n, j] >= PLAIN_COSINE], right[intent])
            )
            top.append(scores([ids[j] for j in order[: len(right[intent])]], right[intent]))
        out[track] = {"threshold": mean_scores(threshold), "oracle_top_k": mean_scores(top)}
    pairs = model.encode(
        [text for intent in intents for text in REQUESTS[intent]], normalize_embeddings=True
    )
    for n, intent in enumerate(intents):
        similarity[intent] = round(float(pairs[2 * n] @ pairs[2 * n + 1]), 3)
    out["request_paraphrase_cosine"] = similarity
    return out


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-intent", type=int, default=6, help="Messages per intent.")
    parser.add_argument("--quick", action="store_true", help="4 of the 12 requests.")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    machine = machine_facts()
    intents = list(REQUESTS)[:4] if args.quick else list(REQUESTS)
    items, right = catalog(args.per_intent)
    started = time.perf_counter()
    measured: dict[str, dict[str, list[list[dict[str, float]]]]] = {}
    with running_server() as server, Client(server.url, timeout=300) as client:
        for side in ("fineloop", "base"):
            measured[side] = run_requests(client, side, intents, items, right)
    plain = plain_side(intents, items, right)
    cases = []
    for track in ("same", "paraphrase"):
        for round_no in range(ROUNDS + 1):
            fine = mean_scores(measured["fineloop"][track][round_no])
            base = mean_scores(measured["base"][track][round_no])
            cases.append(
                {
                    "case": f"{track}, {round_no} rounds",
                    "track": track,
                    "rounds": round_no,
                    "fineloop": fine,
                    "base": base,
                    "plain": plain[track]["threshold"],
                    "plain_oracle_top_k": plain[track]["oracle_top_k"],
                    "per_request_fineloop": {
                        intent: measured["fineloop"][track][round_no][n]
                        for n, intent in enumerate(intents)
                    },
                    "met": (
                        {"precision_and_recall_at_least_0.95": met(fine)} if round_no >= 2 else {}
                    ),
                }
            )
    report(args, machine, cases, plain, intents, items, time.perf_counter() - started)


def met(side: dict[str, float]) -> bool:
    return side["precision"] >= GOAL and side["recall"] >= GOAL


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    cases: list[dict[str, Any]],
    plain: dict[str, Any],
    intents: list[str],
    items: dict[str, str],
    seconds: float,
) -> None:
    rows = []
    for case in cases:
        f, b, p = case["fineloop"], case["base"], case["plain"]
        goal = case["met"].get("precision_and_recall_at_least_0.95")
        rows.append(
            [
                case["case"],
                f["precision"],
                f["recall"],
                f["exact"],
                f["selected"],
                b["precision"],
                b["recall"],
                p["precision"],
                p["recall"],
                "" if goal is None else ("[green]yes[/green]" if goal else "[red]no[/red]"),
            ]
        )
    k = args.per_intent
    print_table(
        f"select, mean of {len(intents)} requests (k = {k} right of n = {len(items)}); "
        f"plain = bare MiniLM cosine >= {PLAIN_COSINE}; goal P, R >= {GOAL} after 2 rounds",
        [
            "query, feedback rounds",
            "fineloop P",
            "fineloop R",
            "exact set",
            "selected",
            "base P",
            "base R",
            "plain P",
            "plain R",
            "goal met",
        ],
        rows,
    )
    path = write_results(
        "online_adaptation",
        {
            "benchmark": "online_adaptation",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": vars(args)
            | {
                "items": len(items),
                "right_per_request": k,
                "requests": {intent: REQUESTS[intent] for intent in intents},
                "request_paraphrase_cosine": plain["request_paraphrase_cosine"],
                "threshold": "project default (serving_policy.select_threshold = 0.5)",
                "plain_cosine_threshold": PLAIN_COSINE,
                "plain_oracle_top_k": {"same": plain["same"], "paraphrase": plain["paraphrase"]},
                "seconds": round(seconds, 1),
            },
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

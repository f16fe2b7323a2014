"""The dashboard's generation project page under a realistic store: how long a page of
interactions with their feedback (word diffs of corrections, preferences, thumbs) takes.

`fineloop serve` (SQLite, default settings) holds one generation project with N logged
replies, each corrected and thumbed, and one preference per ten. Timed: GET
/projects/{p} (page 1: the charts, versions and the first 20 interactions with their
feedback rendered) and a deep page (?page=250), against the JSON API listing the same 20
interactions without their feedback (GET /v1/projects/{p}/interactions?limit=20), the
plain read the page adds to. Medians over the requests.

    .venv/bin/python bench/dashboard_pages.py            # 10,000 interactions, 50 requests
    .venv/bin/python bench/dashboard_pages.py --quick    # 1,000 interactions, 10 requests
"""

from __future__ import annotations

import argparse
import time

import httpx

from common import machine_facts, median, percentile, print_table, running_server, write_results

PROJECT = "bench"


def seed(client: httpx.Client, count: int) -> None:
    made = client.post("/v1/projects", json={"name": PROJECT, "task": "generation"})
    assert made.status_code == 201, made.text
    for start in range(0, count, 1000):
        ids = range(start, min(start + 1000, count))
        rows = [
            {
                "id": f"i{n}",
                "input": {"messages": [{"role": "user", "content": f"How do I change plan {n}?"}]},
                "output": {"text": f"I am not sure about plan {n}, sorry."},
                "model_version": "v0",
            }
            for n in ids
        ]
        sent = client.post(
            f"/v1/projects/{PROJECT}/interactions/batch", json={"interactions": rows}
        )
        assert sent.is_success, sent.text
        events: list[dict[str, object]] = []
        for n in ids:
            fixed = f"Open settings, choose plan {n}, and confirm."
            events.append({"kind": "correction", "interaction_id": f"i{n}", "output": fixed})
            events.append({"kind": "thumb", "interaction_id": f"i{n}", "value": "down"})
            if n % 10 == 1:
                events.append(
                    {
                        "kind": "preference",
                        "chosen_interaction_id": f"i{n}",
                        "rejected_interaction_id": f"i{n - 1}",
                    }
                )
        sent = client.post(f"/v1/projects/{PROJECT}/feedback/batch", json={"events": events})
        assert sent.is_success, sent.text


def timed(client: httpx.Client, path: str, requests: int) -> list[float]:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, requests = (1000, 10) if args.quick else (10_000, 50)
    with running_server() as server, httpx.Client(base_url=server.url, timeout=120) as client:
        seed(client, count)
        cases = {
            "project page, page 1": f"/projects/{PROJECT}",
            "project page, page 250": f"/projects/{PROJECT}?page=250",
            "plain: API list of 20 interactions": f"/v1/projects/{PROJECT}/interactions?limit=20",
        }
        results = {name: timed(client, path, requests) for name, path in cases.items()}
    rows = [[name, median(t), percentile(t, 95)] for name, t in results.items()]
    print_table(
        f"generation project page, {count:,} interactions", ["case", "median ms", "p95 ms"], rows
    )
    write_results(
        "dashboard_pages",
        {
            "benchmark": "dashboard_pages",
            "machine": machine_facts(),
            "config": {"interactions": count, "requests": requests},
            "cases": [
                {"case": name, "fineloop": {"median_ms": median(t), "p95_ms": percentile(t, 95)}}
                for name, t in results.items()
            ],
        },
    )


if __name__ == "__main__":
    main()

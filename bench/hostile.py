"""A hostile client and a hostile web page against a real server, with legitimate users on it.

Starts `fineloop serve` (SQLite, an admin key configured, the packaged MiniLM), makes a
project with 300 items, then:

1. sends every class of bad input from the hardening issue (bogus keys of 1 MB, integers
   beyond 64 bits, Unicode digits in version references, booleans for numbers, cross-site
   and DNS-rebinding requests, 100 x 100k-character inputs, oversize bodies on a project
   named `import`, `/static/%00`, ids with `/`, pickle and out-of-root base models) and
   counts responses by status: the promise is 0 responses 5xx;
2. runs 4 clients x `--seconds` of search + feedback twice: alone (`plain`) and while a
   fifth thread keeps replaying the attack classes (`fineloop`), and reports p50/p99 and
   error counts of the legitimate requests;
3. reads the server's RSS before the attacks, after them, and at the end.

There is no untrained-model (`base`) side here: nothing is trained. Each case's object in
`bench/results/hostile.json` holds `fineloop` (what the server answered) and, for the load
case, `plain` (the same load without the attack).

    .venv/bin/python bench/hostile.py                 # ~4 min on 2 cores
    .venv/bin/python bench/hostile.py --seconds 20    # quicker
"""

from __future__ import annotations

import argparse
import io
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from common import machine_facts, percentile, print_table, running_server, write_results

KEY = "bench-" + secrets.token_urlsafe(32)
ADMIN = {"Authorization": f"Bearer {KEY}"}
PROJECT = "hostile"
WORDS = "account billing card transfer refund password login export invoice team".split()
Attack = Callable[[httpx.Client], list[httpx.Response]]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup(http: httpx.Client) -> None:
    created = http.post("/v1/projects", json={"name": PROJECT, "task": "embedding"})
    created.raise_for_status()
    items = [
        {
            "id": f"item-{i}",
            "text": f"{WORDS[i % 10]} {WORDS[(i * 7) % 10]} question number {i}",
            "metadata": {"section": WORDS[i % 3]},
        }
        for i in range(300)
    ]
    http.put(f"/v1/projects/{PROJECT}/items", json={"items": items}).raise_for_status()
    for _ in range(600):  # the first search waits for the index build in the background
        found = http.post(f"/v1/projects/{PROJECT}/search", json={"query": "refund"})
        if found.status_code == 200:
            return
        time.sleep(0.5)
    raise RuntimeError(f"search never became ready: {found.status_code} {found.text[:200]}")


# --- the attack classes --------------------------------------------------------------------


def bogus_keys(http: httpx.Client) -> list[httpx.Response]:
    big = [secrets.token_urlsafe(768 * 1024) for _ in range(4)]  # ~1 MB tokens
    out = []
    for i in range(100):
        token = big[i % 4] + str(i)  # every one distinct
        out.append(http.get("/v1/projects", headers={"Authorization": f"Bearer {token}"}))
    return out


def huge_integers(http: httpx.Client) -> list[httpx.Response]:
    huge = 2**70
    return [
        http.patch(
            f"/v1/projects/{PROJECT}",
            json={"training_policy": {"trigger": {"feedback_count": huge}}},
            headers=ADMIN,
        ),
        http.patch(
            f"/v1/projects/{PROJECT}", json={"training_policy": {"seed": huge}}, headers=ADMIN
        ),
        http.put(
            f"/v1/projects/{PROJECT}/items",
            json={"items": [{"id": "huge", "text": "x", "metadata": {"n": huge}}]},
            headers=ADMIN,
        ),
        http.post(
            f"/v1/projects/{PROJECT}/search",
            json={"query": "refund", "filters": {"n": huge}},
            headers=ADMIN,
        ),
        http.get("/v1/projects", headers=ADMIN),  # must still list
    ]


def unicode_digits(http: httpx.Client) -> list[httpx.Response]:
    out = []
    for ref in ("²", "٣", "v²", "\uff11"):  # superscript, Arabic-Indic, fullwidth digits
        out.append(
            http.post(
                f"/v1/projects/{PROJECT}/search", json={"query": "a", "version": ref}, headers=ADMIN
            )
        )
        out.append(http.get(f"/v1/projects/{PROJECT}/versions/{ref}", headers=ADMIN))
        out.append(
            http.post(f"/v1/projects/{PROJECT}/promote", json={"version": ref}, headers=ADMIN)
        )
    return out


def booleans_for_numbers(http: httpx.Client) -> list[httpx.Response]:
    search = f"/v1/projects/{PROJECT}/search"
    return [
        http.post(
            f"/v1/projects/{PROJECT}/feedback",
            json={"kind": "rating", "value": True},
            headers=ADMIN,
        ),
        http.post(search, json={"query": "refund", "k": True}, headers=ADMIN),
        http.post(
            f"/v1/projects/{PROJECT}/select",
            json={"query": "refund", "threshold": False},
            headers=ADMIN,
        ),
        http.post(
            "/v1/embeddings",
            json={"model": PROJECT, "input": "refund", "dimensions": True},
            headers=ADMIN,
        ),
    ]


def browser_pages(http: httpx.Client) -> list[httpx.Response]:
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    return [
        http.post(
            f"/v1/projects/{PROJECT}/items",
            content='{"items": [{"id": "evil", "text": "x"}]}',
            headers={**ADMIN, **evil, "Content-Type": "text/plain"},
        ),
        http.post(
            f"/v1/projects/{PROJECT}/train",
            content="{}",
            headers={**ADMIN, **evil, "Content-Type": "text/plain"},
        ),
        http.get("/v1/projects", headers={**ADMIN, "Host": "attacker.example:8000"}),
    ]


def costly_inputs(http: httpx.Client) -> list[httpx.Response]:
    text = "refund " * 15_000  # ~100k characters
    return [
        http.post(
            "/v1/embeddings",
            json={"model": PROJECT, "input": [text] * 100},
            headers=ADMIN,
            timeout=120,
        ),
        http.post(
            f"/v1/projects/{PROJECT}/search", json={"query": text}, headers=ADMIN, timeout=120
        ),
    ]


def body_limits(http: httpx.Client) -> list[httpx.Response]:
    http.post("/v1/projects", json={"name": "import", "task": "embedding"}, headers=ADMIN)
    big = {"items": [{"id": f"i{i}", "text": "x" * 4000} for i in range(9_000)]}  # ~36 MB
    return [
        http.put("/v1/projects/import/items", json=big, headers=ADMIN, timeout=120),
        http.put(
            "/v1/projects/import/items",
            json={"items": [{"id": "small", "text": "fits"}]},
            headers=ADMIN,
        ),
    ]


def odd_paths(http: httpx.Client) -> list[httpx.Response]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array([b"ok", b"\xff\xfe"], pa.binary()), "text": ["a", "b"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return [
        http.get("/static/%00"),
        http.post(
            f"/v1/projects/{PROJECT}/import/items?format=parquet",
            content=buffer.getvalue(),
            headers={**ADMIN, "Content-Type": "application/octet-stream"},
        ),
        http.put(
            f"/v1/projects/{PROJECT}/items",
            json={"items": [{"id": "a/b", "text": "slash"}]},
            headers=ADMIN,
        ),
        http.get(f"/v1/projects/{PROJECT}/items/a/b", headers=ADMIN),
        http.post(
            "/v1/projects",
            json={"name": "pickled", "task": "embedding", "base_model": "/etc"},
            headers=ADMIN,
        ),
    ]


ATTACKS: dict[str, Attack] = {
    "bogus_keys": bogus_keys,
    "huge_integers": huge_integers,
    "unicode_digits": unicode_digits,
    "booleans_for_numbers": booleans_for_numbers,
    "browser_pages": browser_pages,
    "costly_inputs": costly_inputs,
    "body_limits": body_limits,
    "odd_paths": odd_paths,
}


# --- legitimate load -------------------------------------------------------------------------


def legit_load(url: str, seconds: float, clients: int = 4) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def user(n: int) -> None:
        with httpx.Client(base_url=url, headers=ADMIN, timeout=60) as http:
            i = 0
            while time.monotonic() < stop:
                query = f"{WORDS[(n + i) % 10]} {WORDS[(n * 3 + i) % 10]}"
                started = time.perf_counter()
                found = http.post(f"/v1/projects/{PROJECT}/search", json={"query": query, "k": 5})
                took = (time.perf_counter() - started) * 1000
                answers = [found]
                if found.status_code == 200:
                    body = found.json()
                    answers.append(
                        http.post(
                            f"/v1/projects/{PROJECT}/feedback",
                            json={
                                "kind": "selection",
                                "interaction_id": body["interaction_id"],
                                "selected": [body["items"][0]["id"]],
                            },
                        )
                    )
                with lock:
                    latencies.append(took)
                    statuses.update(str(a.status_code) for a in answers)
                i += 1

    threads = [threading.Thread(target=user, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "searches": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "responses_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "non_2xx": sum(n for s, n in statuses.items() if not s.startswith("2")),
    }


def run_attacks(http: httpx.Client, counts: dict[str, Counter[int]]) -> None:
    for name, attack in ATTACKS.items():
        for response in attack(http):
            counts[name][response.status_code] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="legitimate load per phase")
    args = parser.parse_args()
    env = {"FINELOOP_API_KEYS": f"{KEY}:admin", "FINELOOP_AUTH_FAILURES_PER_MINUTE": "100000"}
    with running_server(env=env, startup_s=120) as server:
        pid = server.process.pid
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as http:
            setup(http)
            rss_start = rss_mb(pid)
            counts: dict[str, Counter[int]] = {name: Counter() for name in ATTACKS}
            started = time.perf_counter()
            run_attacks(http, counts)
            attack_seconds = time.perf_counter() - started
            rss_after_attacks = rss_mb(pid)

            plain = legit_load(server.url, args.seconds)
            stop = threading.Event()

            def attacker() -> None:
                with httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as own:
                    while not stop.is_set():
                        run_attacks(own, counts)

            thread = threading.Thread(target=attacker)
            thread.start()
            attacked = legit_load(server.url, args.seconds)
            stop.set()
            thread.join()
            rss_end = rss_mb(pid)
            alive = http.get("/healthz").status_code

    cases = []
    rows = []
    for name, counter in counts.items():
        entry = {
            "requests": sum(counter.values()),
            "responses_5xx": sum(n for s, n in counter.items() if s >= 500),
            **{f"status_{s}": n for s, n in sorted(counter.items())},
        }
        cases.append({"case": name, "fineloop": entry})
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(counter.items()))
        rows.append((name, entry["requests"], entry["responses_5xx"], statuses))
    cases.append(
        {
            "case": "legit_load_4_clients",
            "fineloop": attacked,
            "plain": plain,
            "notes": "fineloop: while the attack classes replay; plain: the same load alone",
        }
    )
    cases.append(
        {
            "case": "memory",
            "fineloop": {
                "rss_mb_start": rss_start,
                "rss_mb_after_first_attacks": rss_after_attacks,
                "rss_mb_end": rss_end,
                "first_attack_round_seconds": attack_seconds,
                "healthz_at_end": alive,
            },
        }
    )
    print_table("attack classes", ("class", "requests", "5xx", "statuses"), rows)
    print_table(
        "legitimate search + feedback, 4 clients",
        ("phase", "searches", "p50 ms", "p99 ms", "5xx", "non-2xx"),
        [
            (
                label,
                r["searches"],
                r["p50_ms"],
                r["p99_ms"],
                r["responses_5xx"],
                r["non_2xx"],
            )
            for label, r in (("alone (plain)", plain), ("under attack (fineloop)", attacked))
        ],
    )
    print_table(
        "server RSS (MB)",
        ("start", "after first attack round", "end"),
        [(f"{rss_start:.0f}", rss_after_attacks, rss_end)],
    )
    path = write_results(
        "hostile",
        {
            "script": "hostile",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_facts(),
            "seconds_per_phase": args.seconds,
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

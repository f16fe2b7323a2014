"""Feedback ingestion: fineloop over HTTP against stdlib sqlite3 inserting the same rows.

fineloop runs as `fineloop serve` (SQLite store, default settings, an ingest API key) and
takes batches of 1,000 mixed events (thumb, rating, selection, each with an idempotency key
and an interaction logged beforehand) on `/feedback/batch`, then single events on
`/feedback`. The plain path is the physical ceiling: `sqlite3.executemany` of the very rows
fineloop stores (same JSON text; tables, indexes and foreign keys copied from fineloop's
store; WAL; same `synchronous`), one transaction per batch, one insert+commit per single
event; a check at the end compares both tables row by row. Both stores grow in step, rounds
alternate which side goes first, and every number reported is the median over rounds.

    .venv/bin/python bench/ingest.py            # 5 rounds x 50 batches + 1,000 singles
    .venv/bin/python bench/ingest.py --quick    # a smoke run in a few seconds
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from common import (
    COMPARISON_COLUMNS,
    comparison_row,
    machine_facts,
    median,
    percentile,
    print_table,
    ratio,
    running_server,
    write_results,
)
from fineloop.config import Settings

# The server refuses configured keys shorter than 32 characters.
ADMIN_KEY, INGEST_KEY = "bench-admin-key-" + "a" * 24, "bench-ingest-key-" + "i" * 24
PROJECT = "bench"
GOAL_RATE, GOAL_RATIO, GOAL_P99_MS = 5_000.0, 0.5, 10.0
JSON_HEADERS = {"content-type": "application/json"}
COLUMNS = (
    "project_id", "interaction_id", "kind", "payload", "input", "user_id", "timestamp",
    "received_at", "idempotency_key", "difficulty", "reward", "metadata",
)  # fmt: skip


class Workload:
    """Ranking interactions as a search box logs them, and the feedback users give on them."""

    def __init__(self, seed: int, n_interactions: int = 2000, n_docs: int = 500) -> None:
        self.rng = random.Random(seed)
        self.shown: dict[str, list[str]] = {}
        self.interactions: list[dict[str, Any]] = []
        for n in range(n_interactions):
            docs = [f"doc-{d}" for d in self.rng.sample(range(n_docs), 5)]
            interaction_id = f"{self.rng.getrandbits(128):032x}"
            self.shown[interaction_id] = docs
            self.interactions.append(
                {
                    "id": interaction_id,
                    "input": {"query": f"how do I reset my password, variant {n}"},
                    "output": {
                        "items": [{"id": d, "score": 0.9 - 0.1 * i} for i, d in enumerate(docs)]
                    },
                    "model_version": "v1",
                }
            )
        self.ids = list(self.shown)

    def events(self, prefix: str, count: int) -> list[dict[str, Any]]:
        """`count` events: 40% thumbs, 30% ratings, 30% selections.

        Like live traffic: given about 30 s before they are sent, on interactions logged
        earlier (random ids, as the SDK's uuid4), with random (uuid-like) idempotency keys."""
        rng, made = self.rng, []
        for _ in range(count):
            interaction = rng.choice(self.ids)
            moment = datetime.now(UTC) - timedelta(seconds=rng.expovariate(1 / 30))
            event: dict[str, Any] = {
                "interaction_id": interaction,
                "user_id": f"user-{rng.randrange(1000)}",
                "timestamp": moment.isoformat(),
                "idempotency_key": f"{prefix}-{rng.getrandbits(128):032x}",
                "metadata": {"client": "web", "session": f"s-{rng.randrange(10_000)}"},
            }
            draw = rng.random()
            if draw < 0.4:
                event |= {"kind": "thumb", "value": "up" if rng.random() < 0.7 else "down"}
            elif draw < 0.7:
                event |= {"kind": "rating", "value": rng.randint(1, 5)}
            else:
                picked, *others = rng.sample(self.shown[interaction], 3)
                event |= {"kind": "selection", "selected": [picked], "rejected": others[:1]}
            made.append(event)
        return made

    def stored_rows(self, events: list[dict[str, Any]], project_id: int) -> list[tuple[Any, ...]]:
        """The rows fineloop stores for `events`, column for column (checked at the end)."""
        received = _sqlite_time(datetime.now(UTC))
        rows = []
        for e in events:
            difficulty = None
            if e["kind"] == "thumb":
                payload, reward = {"value": e["value"]}, 1.0 if e["value"] == "up" else -1.0
            elif e["kind"] == "rating":
                payload = {"value": float(e["value"])}
                reward = 2.0 * (e["value"] - 1) / 4 - 1.0
            else:
                payload, reward = {"selected": e["selected"], "rejected": e["rejected"]}, 1.0
                difficulty = self.shown[e["interaction_id"]].index(e["selected"][0]) / 4
            rows.append(
                (project_id, e["interaction_id"], e["kind"], _compact(payload), "null",
                 e["user_id"], _sqlite_time(datetime.fromisoformat(e["timestamp"])), received,
                 e["idempotency_key"], difficulty, reward, _compact(e["metadata"]))
            )  # fmt: skip
        return rows


def _compact(value: Any) -> str:
    """JSON text as fineloop's store writes it (orjson: no spaces)."""
    return json.dumps(value, separators=(",", ":"))


def _sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy writes a UTC datetime into SQLite."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def main() -> None:
    args = parse_args()
    machine = machine_facts()  # before the run: its load average is the other processes'
    synchronous = Settings().sqlite_synchronous
    workload = Workload(seed=7)
    env = {
        "FINELOOP_API_KEYS": f"{ADMIN_KEY}:admin,{INGEST_KEY}:ingest",
        "FINELOOP_SQLITE_SYNCHRONOUS": synchronous,
    }
    with running_server(env) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        client.headers["authorization"] = f"Bearer {INGEST_KEY}"
        setup_fineloop(client, workload)
        plain = open_plain(server.data_dir / "plain.db", synchronous, server.database)
        batched: dict[str, list[float]] = {"fineloop": [], "plain": []}
        single: dict[str, list[list[float]]] = {"fineloop": [], "plain": []}
        for round_no in range(-1, args.rounds):  # round -1 warms both paths up, unreported
            warm = round_no < 0
            n_batches = 2 if warm else args.batches
            n_singles = 50 if warm else args.singles
            bodies = [
                workload.events(f"r{round_no}b{b}", args.batch_size) for b in range(n_batches)
            ]
            singles = workload.events(f"r{round_no}s", n_singles)
            order = ("fineloop", "plain") if round_no % 2 == 0 else ("plain", "fineloop")
            for side in order:
                if side == "fineloop":
                    rate = fineloop_batched(client, bodies)
                else:
                    rate = plain_batched(plain, workload, bodies)
                if not warm:
                    batched[side].append(rate)
            for side in order:
                latencies = (
                    fineloop_single(client, singles)
                    if side == "fineloop"
                    else plain_single(plain, workload, singles)
                )
                if not warm:
                    single[side].append(latencies)
            if not warm:
                console_round(round_no, batched, single)
        checks = same_rows_check(server.database, plain)
        plain.close()
    report(
        args,
        machine | {"load_average_at_end": machine_facts()["load_average"]},
        batched,
        single,
        checks,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Measured rounds (median).")
    parser.add_argument("--batches", type=int, default=50, help="Batches per round and side.")
    parser.add_argument("--batch-size", type=int, default=1000, help="Events per batch.")
    parser.add_argument("--singles", type=int, default=1000, help="Single events per round.")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 5 batches, 200 singles.")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batches, args.singles = 2, 5, 200
    return args


def setup_fineloop(client: httpx.Client, workload: Workload) -> None:
    """Create the project and log every interaction the events point at (not timed)."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    created = client.post(
        "/v1/projects", json={"name": PROJECT, "task": "embedding"}, headers=admin
    )
    created.raise_for_status()
    chunk = 1000
    for start in range(0, len(workload.interactions), chunk):
        body = {"interactions": workload.interactions[start : start + chunk]}
        client.post(f"/v1/projects/{PROJECT}/interactions/batch", json=body).raise_for_status()


def open_plain(path: Path, synchronous: str, fineloop_db: Path) -> sqlite3.Connection:
    """A store of sqlite3's own with fineloop's DDL (tables, indexes, foreign keys) and its
    projects and interactions rows, so every insert checks and indexes exactly as much."""
    plain = sqlite3.connect(f"file:{path}", uri=True, isolation_level=None)
    for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON"):
        plain.execute(f"PRAGMA {pragma}")
    plain.execute("ATTACH DATABASE ? AS served", (f"file:{fineloop_db}?mode=ro",))
    tables = ("projects", "interactions", "feedback")
    ddl = plain.execute(
        "SELECT sql FROM served.sqlite_master WHERE sql IS NOT NULL AND tbl_name IN (?, ?, ?) "
        "ORDER BY type = 'index', rowid",
        tables,
    ).fetchall()
    for (statement,) in ddl:
        plain.execute(statement)
    for name in tables[:2]:
        plain.execute(f"INSERT INTO main.{name} SELECT * FROM served.{name}")
    plain.execute("DETACH DATABASE served")
    return plain


def project_id(plain: sqlite3.Connection) -> int:
    found: int = plain.execute("SELECT id FROM projects WHERE name = ?", (PROJECT,)).fetchone()[0]
    return found


def fineloop_batched(client: httpx.Client, batches: list[list[dict[str, Any]]]) -> float:
    bodies = [json.dumps({"events": events}).encode() for events in batches]
    url = f"/v1/projects/{PROJECT}/feedback/batch"
    start = time.perf_counter()
    for body in bodies:
        response = client.post(url, content=body, headers=JSON_HEADERS)
        if response.status_code != 201:
            raise RuntimeError(f"batch refused: {response.status_code} {response.text[:500]}")
    elapsed = time.perf_counter() - start
    return sum(len(events) for events in batches) / elapsed


def plain_batched(
    plain: sqlite3.Connection, workload: Workload, batches: list[list[dict[str, Any]]]
) -> float:
    prepared = [workload.stored_rows(events, project_id(plain)) for events in batches]
    statement = insert_statement()
    start = time.perf_counter()
    for rows in prepared:
        plain.execute("BEGIN IMMEDIATE")
        plain.executemany(statement, rows)
        plain.execute("COMMIT")
    elapsed = time.perf_counter() - start
    return sum(len(rows) for rows in prepared) / elapsed


def fineloop_single(client: httpx.Client, events: list[dict[str, Any]]) -> list[float]:
    bodies = [json.dumps(event).encode() for event in events]
    url = f"/v1/projects/{PROJECT}/feedback"
    latencies: list[float] = []
    for body in bodies:
        start = time.perf_counter()
        response = client.post(url, content=body, headers=JSON_HEADERS)
        latencies.append((time.perf_counter() - start) * 1000)
        if response.status_code != 201:
            raise RuntimeError(f"event refused: {response.status_code} {response.text[:500]}")
    return latencies


def plain_single(
    plain: sqlite3.Connection, workload: Workload, events: list[dict[str, Any]]
) -> list[float]:
    rows = workload.stored_rows(events, project_id(plain))
    statement = insert_statement()
    latencies: list[float] = []
    for row in rows:
        start = time.perf_counter()
        plain.execute("BEGIN IMMEDIATE")
        plain.execute(statement, row)
        plain.execute("COMMIT")
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def insert_statement() -> str:
    marks = ", ".join("?" for _ in COLUMNS)
    return f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({marks})"


def same_rows_check(fineloop_db: Path, plain: sqlite3.Connection) -> dict[str, Any]:
    """Both stores hold the same rows (but ids and received_at), indexed the same way."""
    served = sqlite3.connect(f"file:{fineloop_db}?mode=ro", uri=True)
    compared = ", ".join(c for c in COLUMNS if c != "received_at")
    query = f"SELECT {compared} FROM feedback ORDER BY idempotency_key"
    counts = [db.execute("SELECT count(*) FROM feedback").fetchone()[0] for db in (served, plain)]
    identical = served.execute(query).fetchall() == plain.execute(query).fetchall()
    indexes = [sorted(indexed_columns(db)) for db in (served, plain)]
    served.close()
    if not identical or indexes[0] != indexes[1]:
        raise RuntimeError(f"plain rows or indexes differ from fineloop's: {indexes}")
    return {"rows_each": counts[0], "rows_identical": identical, "indexes": indexes[0]}


def indexed_columns(db: sqlite3.Connection) -> list[list[str]]:
    found = []
    for _, name, unique, *_ in db.execute("PRAGMA index_list(feedback)"):
        columns = [row[2] for row in db.execute(f"PRAGMA index_info('{name}')")]
        found.append([*columns, "unique" if unique else "plain"])
    return found


def console_round(
    round_no: int, batched: dict[str, list[float]], single: dict[str, list[list[float]]]
) -> None:
    fl, pl = batched["fineloop"][-1], batched["plain"][-1]
    p99 = percentile(single["fineloop"][-1], 99)
    print(
        f"round {round_no}: fineloop {fl:,.0f} ev/s, plain {pl:,.0f} ev/s, "
        f"ratio {fl / pl:.3f}; single p99 {p99:.2f} ms"
    )


def latency_metrics(rounds: list[list[float]]) -> dict[str, float]:
    return {
        "p50_ms": median([percentile(r, 50) for r in rounds]),
        "p99_ms": median([percentile(r, 99) for r in rounds]),
        "mean_ms": median([sum(r) / len(r) for r in rounds]),
        "events_per_s": median([len(r) / (sum(r) / 1000) for r in rounds]),
    }


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    batched: dict[str, list[float]],
    single: dict[str, list[list[float]]],
    checks: dict[str, Any],
) -> None:
    rate = {side: median(values) for side, values in batched.items()}
    lat = {side: latency_metrics(values) for side, values in single.items()}
    batch_ratio = ratio(rate["fineloop"], rate["plain"])
    met = {
        "batched_rate": rate["fineloop"] >= GOAL_RATE,
        "batched_ratio": batch_ratio >= GOAL_RATIO,
        "single_p99": lat["fineloop"]["p99_ms"] <= GOAL_P99_MS,
    }
    fl, pl = lat["fineloop"], lat["plain"]
    print_table(
        f"Feedback ingest, median of {args.rounds} rounds "
        f"(synchronous={machine['sqlite_synchronous']}, load {machine['load_average'][0]})",
        COMPARISON_COLUMNS,
        [
            comparison_row(
                "batched events/s",
                rate["fineloop"],
                rate["plain"],
                f">= {GOAL_RATE:,.0f}/s, ratio >= {GOAL_RATIO}",
                met["batched_rate"] and met["batched_ratio"],
            ),
            comparison_row("single p50 ms", fl["p50_ms"], pl["p50_ms"]),
            comparison_row(
                "single p99 ms",
                fl["p99_ms"],
                pl["p99_ms"],
                f"<= {GOAL_P99_MS:g} ms",
                met["single_p99"],
            ),
            comparison_row("single events/s", fl["events_per_s"], pl["events_per_s"]),
        ],
    )
    cases = [
        {
            "case": "batched",
            "fineloop": {"events_per_s": rate["fineloop"]},
            "base": {},
            "plain": {"events_per_s": rate["plain"]},
            "ratio_fineloop_to_plain": batch_ratio,
            "goals": {"fineloop_events_per_s": GOAL_RATE, "ratio": GOAL_RATIO},
            "met": {"fineloop_events_per_s": met["batched_rate"], "ratio": met["batched_ratio"]},
            "rounds": batched,
            "ratio_by_round": [f / p for f, p in zip(*batched.values(), strict=True)],
            "notes": f"{args.batches} batches of {args.batch_size} events per round and side; "
            "fineloop over HTTP keep-alive (bodies encoded before timing), plain rows "
            "built before timing: executemany + COMMIT only.",
        },
        {
            "case": "single",
            "fineloop": lat["fineloop"],
            "base": {},
            "plain": lat["plain"],
            "ratio_p99_fineloop_to_plain": ratio(lat["fineloop"]["p99_ms"], lat["plain"]["p99_ms"]),
            "goals": {"fineloop_p99_ms": GOAL_P99_MS},
            "met": {"fineloop_p99_ms": met["single_p99"]},
            "notes": f"{args.singles} sequential events per round; each plain event is "
            "BEGIN IMMEDIATE + INSERT + COMMIT. Percentiles per round, then median over rounds.",
        },
    ]
    path = write_results(
        "ingest",
        {
            "benchmark": "ingest",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "config": vars(args),
            "checks": checks,
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

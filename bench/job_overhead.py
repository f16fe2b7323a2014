"""Job overhead: a whole fineloop training job against the bare sentence-transformers fit on
the same rows plus one encode of the catalog (what a job needs at the least: train the
candidate, then embed the items with it to serve them).

Data: StackFAQ, every answer of the first `--threads` threads an item (long texts: mean
~400 characters; all 125 threads give 719 answers); each training paraphrase of a
thread is a label event naming all its answers. A `fineloop serve` holds the project;
one search first makes serving index the catalog with the base model (what happens
after an upload), which leaves the base's vectors on disk. Then one training job through
the API (defaults but `--epochs`) and its phases as the job reports them: build
(snapshot + mining with the champion), train (load, validation of the start model, the
fit with its per-epoch validation, save), evaluate (base, champion and candidate on the
test split), with the corpus texts each phase encoded and reused. `--cold` also runs a
job on a second project that serving never indexed: the job encodes the base's catalog.

The bare side, in this process: `SentenceTransformerTrainer` with
MultipleNegativesRankingLoss on the very rows fineloop trained on (the job's snapshot,
prepared by fineloop's own loss spec: anchor, positive, hard negative), the same epochs,
batch size, rate, warmup, seed and batch sampler, no validation; load + fit + save. Plus
`SentenceTransformer.encode` of every item. Goal: job wall <= 1.2 x (bare fit + encode).
The machine has 2 cores shared with other work: single runs, noisy.

    .venv/bin/python bench/job_overhead.py            # 12 threads, ~8 min on 2 shared cores
    .venv/bin/python bench/job_overhead.py --quick    # 5 threads, ~2 min
    .venv/bin/python bench/job_overhead.py --threads 125 --cold   # every answer: hours here
"""

from __future__ import annotations

import argparse
import html
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from common import machine_facts, print_table, ratio, running_server, write_results
from embedding_common import SEED, create_project, minilm_path, run_job, train_runtime
from fineloop import Client
from shared_data import DATASETS

GOAL = 1.2  # job wall over (bare fit + one corpus encode)
JOB_TIMEOUT_S = 3600.0
PHASES = ("mining", "validation", "evaluation")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=12, help="StackFAQ threads used.")
    parser.add_argument("--epochs", type=int, default=1, help="Both trainings.")
    parser.add_argument("--cold", action="store_true", help="Also a job with nothing cached.")
    parser.add_argument("--quick", action="store_true", help="5 threads.")
    args = parser.parse_args()
    if args.quick:
        args.threads = 5
    return args


def answers(threads: int) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """Items (one per answer) and (training paraphrase, the thread's answer ids)."""
    tree = ET.parse(DATASETS / "stackfaq" / "stackExchange-FAQ.xml")
    items: dict[str, str] = {}
    labels: list[tuple[str, list[str]]] = []
    for number, pair in enumerate(list(tree.getroot().iter("qapair"))[:threads]):
        ids = []
        for index, answer in enumerate(pair.findall("answer")):
            text = " ".join(html.unescape(answer.text or "").split())
            if text:
                ids.append(f"t{number:03d}-a{index}")
                items[ids[-1]] = text
        paraphrases = [" ".join(html.unescape(r.text or "").split()) for r in pair.iter("rephr")]
        marker = paraphrases.index("*")
        labels += [(query, ids) for query in paraphrases[:marker] if query and ids]
    return items, labels


def seed(client: Client, name: str, items: dict[str, str], labels: list[Any]) -> None:
    create_project(client, name, items, base_model=minilm_path())
    events = [{"kind": "label", "input": query, "items": ids} for query, ids in labels]
    for start in range(0, len(events), 500):
        client.send_feedback_batch(name, events[start : start + 500])


def index_base(client: Client, server_dir: Path, name: str, timeout: float = 1800) -> float:
    """One search makes serving index the catalog with the champion (the base); wait for
    its vector file. Returns the seconds it took (serving's cost, not the job's)."""
    started = time.perf_counter()
    client.search(name, "warm up", k=1)  # answered once the index is built
    folder = server_dir / "artifacts" / name / "index"
    while not list(folder.glob("m*.npz")):
        if time.perf_counter() - started > timeout:
            raise RuntimeError("serving wrote no vector file")
        time.sleep(0.5)
    return time.perf_counter() - started


def job_case(client: Client, server_dir: Path, name: str, epochs: int) -> dict[str, Any]:
    job = run_job(client, name, JOB_TIMEOUT_S, epochs=epochs)
    series = client.job_metrics(job["id"])
    at_zero = {key: points[0]["value"] for key, points in series.items() if points}
    counts = {
        phase: {
            "encoded": int(at_zero.get(f"encoded/{phase}", 0)),
            "reused": int(at_zero.get(f"reused/{phase}", 0)),
            "encode_s": at_zero.get(f"encode_seconds/{phase}", 0.0),
        }
        for phase in PHASES
    }
    phases = {p: at_zero.get(f"phase_seconds/{p}") for p in ("build", "train", "evaluate")}
    snapshot = server_dir / "artifacts" / name / "snapshots" / job["snapshot_id"]
    return {"job": job, "counts": counts, "phases": phases, "snapshot": snapshot}


def fineloop_rows(snapshot: Path) -> Any:
    """The rows fineloop's trainer fit on: the snapshot's train split, prepared by the loss
    spec with the job's defaults (mnrl, one hard negative, seed 13)."""
    from fineloop.tasks.embedding.evaluate import read_corpus, read_pairs
    from fineloop.tasks.embedding.losses import Negatives, get_loss
    from fineloop.tasks.embedding.train import group_positives

    pairs = read_pairs(snapshot)
    corpus = read_corpus(snapshot)
    negatives = Negatives(sorted(set(corpus.values())), group_positives(pairs), SEED)
    return get_loss("mnrl").prepare(pairs["train"], negatives, 1)


def bare_fit(rows: Any, out_dir: Path, epochs: int) -> dict[str, Any]:
    """The textbook script on fineloop's rows: load, fit, save (fineloop's defaults)."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    started = time.perf_counter()
    model = SentenceTransformer(minilm_path())
    model.model_card_data.local_files_only = True
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_steps=0.1,
        weight_decay=0.01,
        use_cpu=True,
        seed=SEED,
        data_seed=SEED,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=rows, loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    model.save(str(out_dir / "model"))
    return {
        "wall_s": time.perf_counter() - started,
        "fit_s": train_runtime(trainer.state.log_history),
        "rows": len(rows),
        "steps": trainer.state.global_step,
    }


def bare_encode(texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path())
    started = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started


def summary(found: dict[str, Any], bare: dict[str, Any], encode_s: float) -> dict[str, Any]:
    timing = found["job"]["timing"]
    encoded = sum(c["encoded"] for c in found["counts"].values())
    reused = sum(c["reused"] for c in found["counts"].values())
    return {
        "fineloop": {
            "job_wall_s": round(timing["wall_s"], 1),
            "fit_s": round(timing.get("fit_s") or 0.0, 1),
            **{f"{p}_s": round(v or 0.0, 1) for p, v in found["phases"].items()},
            **{
                f"{k}_{phase}": v
                for phase, c in found["counts"].items()
                for k, v in c.items()
                if k != "encode_s"
            },
            "texts_encoded": encoded,
            "texts_reused": reused,
        },
        "base": {},
        "plain": {
            "fit_plus_encode_s": round(bare["wall_s"] + encode_s, 1),
            "fit_wall_s": round(bare["wall_s"], 1),
            "fit_s": round(bare["fit_s"] or 0.0, 1),
            "encode_s": round(encode_s, 1),
        },
        "ratio": round(ratio(timing["wall_s"], bare["wall_s"] + encode_s), 3),
    }


def main() -> None:
    args = parse_args()
    items, labels = answers(args.threads)
    texts = list(items.values())
    print(
        f"{len(items)} answers (mean {sum(map(len, texts)) / len(texts):.0f} chars), "
        f"{len(labels)} labelled paraphrases",
        flush=True,
    )
    cases: list[dict[str, Any]] = []
    wait = {"FINELOOP_SERVING_WAIT_SECONDS": "600"}  # the first search waits for the index
    with running_server(wait) as server, Client(server.url, timeout=1800) as client:
        seed(client, "warm", items, labels)
        print("serving indexes the catalog with the base model ...", flush=True)
        indexed_s = index_base(client, server.data_dir, "warm")
        print(f"  {indexed_s:.1f} s; training job ...", flush=True)
        warm = job_case(client, server.data_dir, "warm", args.epochs)
        print(f"  job {warm['job']['timing']['wall_s']:.1f} s {warm['counts']}", flush=True)
        cold = None
        if args.cold:
            seed(client, "cold", items, labels)
            print("a job on a project serving never indexed ...", flush=True)
            cold = job_case(client, server.data_dir, "cold", args.epochs)
            print(f"  job {cold['job']['timing']['wall_s']:.1f} s {cold['counts']}", flush=True)
        rows = fineloop_rows(warm["snapshot"])
        print(f"bare fit on fineloop's {len(rows)} rows ...", flush=True)
        bare = bare_fit(rows, server.data_dir / "bare", args.epochs)
        encode_s = bare_encode(texts)
        print(f"  fit {bare['wall_s']:.1f} s, encode {encode_s:.1f} s", flush=True)
    described = f"StackFAQ answers: {len(items)} items, {len(labels)} labelled paraphrases"
    cases.append(
        {"case": f"{described}; champion indexed by serving"}
        | summary(warm, bare, encode_s)
        | {"serving_index_s": round(indexed_s, 1)}
    )
    if cold is not None:
        cases.append({"case": f"{described}; nothing cached"} | summary(cold, bare, encode_s))
    for case in cases:
        ours, plain = case["fineloop"], case["plain"]
        rows_out: list[list[Any]] = [
            [
                "whole job vs bare fit + encode (s)",
                ours["job_wall_s"],
                plain["fit_plus_encode_s"],
                case["ratio"],
                f"<= {GOAL}",
                "yes" if case["ratio"] <= GOAL else "no",
            ],
            [
                "fit (trainer's train_runtime, s)",
                ours["fit_s"],
                plain["fit_s"],
                ratio(ours["fit_s"], plain["fit_s"]),
                "",
                "",
            ],
        ]
        for phase in ("build", "train", "evaluate"):
            rows_out.append([f"phase {phase} (s)", ours[f"{phase}_s"], "-", "-", "", ""])
        for phase in PHASES:
            done = f"{ours[f'encoded_{phase}']:,} / {ours[f'reused_{phase}']:,}"
            rows_out.append([f"{phase}: texts encoded / reused", done, "-", "-", "", ""])
        print_table(case["case"], ("metric", "fineloop", "plain", "ratio", "goal", "met"), rows_out)
    path = write_results(
        "job_overhead" if not args.quick else "job_overhead_quick",
        {
            "benchmark": "job_overhead",
            "machine": machine_facts(),
            "config": {
                "threads": args.threads,
                "epochs": args.epochs,
                "quick": args.quick,
                "cold": args.cold,
            },
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

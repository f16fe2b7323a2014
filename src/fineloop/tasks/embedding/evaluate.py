"""Held-out retrieval metrics with sentence-transformers' InformationRetrievalEvaluator.

Each query of a split ranks the whole catalog (the snapshot's corpus); its relevant items
are all positives it has in that split. Queries are taken in sorted order, so the
per-query nDCG@10 of two models line up example by example for the paired bootstrap.

The catalog's vectors come from the model's vector file when it has them, and the ones
encoded here are written to it (corpus_vectors.py): evaluating a champion that serving
has indexed encodes only the queries, and the candidate's encode serves its index later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict  # type: ignore[import-untyped]
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import cos_sim

from fineloop.data.snapshot_io import load_split, load_splits, load_table, read_meta
from fineloop.errors import Invalid
from fineloop.registry.gate import Interval, paired_bootstrap
from fineloop.runtime import device
from fineloop.tasks.base import Evaluation
from fineloop.tasks.embedding.corpus_vectors import encode_corpus, vectors_folder
from fineloop.tasks.encode_counts import record

METRICS = ("accuracy@1", "accuracy@5", "mrr@10", "ndcg@10", "recall@10")
PRIMARY = "ndcg@10"
SCORE = "cosine"


# --- reading a snapshot -------------------------------------------------------------------


def read_pairs(snapshot: Path) -> DatasetDict:
    pairs: DatasetDict = load_splits(Path(snapshot) / "pairs")
    return pairs


def read_split(snapshot: Path, split: str) -> Dataset:
    rows: Dataset = load_split(Path(snapshot) / "pairs", split)
    return rows


def read_corpus(snapshot: Path) -> dict[str, str]:
    """Item id -> text for every item of the project, as the snapshot saw it."""
    corpus = load_table(Path(snapshot) / "corpus")
    return {str(i): str(t) for i, t in zip(corpus["id"], corpus["text"], strict=True)}


def snapshot_info(snapshot: Path) -> dict[str, Any]:
    return read_meta(snapshot)


# --- the evaluator ------------------------------------------------------------------------


class PerQueryEvaluator(InformationRetrievalEvaluator):
    """The library's evaluator, keeping the nDCG@10 of each query from the very hits it
    averages (same ranking, same tie-breaking), so mean(per_query) is its aggregate.

    With `keep_corpus`, the corpus vectors it encodes itself are kept (`last_corpus`):
    the trainer's evaluation of a checkpoint then also gives that checkpoint's vectors."""

    per_query: list[float]
    keep_corpus: bool = False
    last_corpus: torch.Tensor | None = None

    def compute_all_metrics(
        self,
        model: SentenceTransformer,
        corpus_model: Any = None,
        corpus_embeddings: torch.Tensor | None = None,
        output_path: str | None = None,
    ) -> Any:
        if self.keep_corpus and corpus_model is None and corpus_embeddings is None:
            corpus_embeddings = self.embed_inputs(  # a tensor: it asks for convert_to_tensor
                model,
                self.corpus,
                encode_fn_name="document",
                prompt_name=self.corpus_prompt_name,
                prompt=self.corpus_prompt,
            )  # type: ignore[assignment]
            self.last_corpus = corpus_embeddings
        return super().compute_all_metrics(model, corpus_model, corpus_embeddings, output_path)

    def run(
        self,
        model: SentenceTransformer,
        *,
        model_path: str | Path | None,
        folder: Path | None,
        phase: str,
    ) -> dict[str, float]:
        """Evaluate a frozen model loaded from `model_path`, its corpus vectors from (and
        to) the model's vector file in `folder`. Without a path or folder the library
        encodes the corpus itself, as it always did."""
        if model_path is None or folder is None:
            started = time.perf_counter()
            plain: dict[str, float] = self(model)
            spent = time.perf_counter() - started
            record(phase, encoded=len(set(self.corpus)), reused=0, seconds=spent)
            return plain
        vectors = encode_corpus(
            model, self.texts(), model_path=model_path, folder=folder, phase=phase
        )
        results: dict[str, float] = self(model, corpus_embeddings=torch.from_numpy(vectors))
        return results

    def texts(self) -> list[str]:
        """The corpus, in the order of its vectors."""
        return [str(text) for text in self.corpus]

    def compute_metrics(self, queries_result_list: list[Any]) -> Any:
        k = max(self.ndcg_at_k)
        self.per_query = []
        for query_id, hits in zip(self.queries_ids, queries_result_list, strict=True):
            relevant = self.relevant_docs[query_id]
            ranked = sorted(hits, key=lambda hit: (-hit["score"], hit["corpus_id"]))[:k]
            found = [1 if hit["corpus_id"] in relevant else 0 for hit in ranked]
            ideal = self.compute_dcg_at_k([1] * len(relevant), k)  # type: ignore[no-untyped-call]
            dcg = self.compute_dcg_at_k(found, k)  # type: ignore[no-untyped-call]
            self.per_query.append(float(dcg / ideal))
        return super().compute_metrics(queries_result_list)


def ir_evaluator(rows: Dataset, corpus: dict[str, str], name: str) -> PerQueryEvaluator:
    """Queries = the split's distinct anchors (sorted); relevant = their positives' ids."""
    relevant: dict[str, set[str]] = {}
    documents: dict[str, Any] = dict(corpus)
    for anchor, item_id, text in zip(
        rows["anchor"], rows["positive_id"], rows["positive"], strict=True
    ):
        relevant.setdefault(anchor, set()).add(str(item_id))
        documents.setdefault(str(item_id), text)  # a positive always competes in the ranking
    anchors = sorted(relevant)
    ids = [f"q{i:07d}" for i in range(len(anchors))]
    return PerQueryEvaluator(
        queries=dict(zip(ids, anchors, strict=True)),
        corpus=documents,
        relevant_docs={qid: relevant[a] for qid, a in zip(ids, anchors, strict=True)},
        accuracy_at_k=[1, 5],
        precision_recall_at_k=[10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        name=name,
        write_csv=False,
        score_functions={SCORE: cos_sim},
        main_score_function=SCORE,
    )


def short_metrics(results: dict[str, float], name: str) -> dict[str, float]:
    """`{name}_cosine_ndcg@10` (and so on) -> `ndcg@10`."""
    prefix = f"{name}_{SCORE}_"
    return {key.removeprefix(prefix): float(v) for key, v in results.items() if prefix in key}


def load_model(model: str | Path) -> SentenceTransformer:
    return SentenceTransformer(str(model), device=device())


# --- public -------------------------------------------------------------------------------


def evaluate(
    model: str | Path | SentenceTransformer,
    snapshot: Path,
    split: str = "test",
    *,
    cache: bool = True,
) -> Evaluation:
    """The model's metrics on the split. `cache=False`: encode the catalog here, neither
    reading nor writing the model's vector file (an in-memory model never uses it)."""
    rows = read_split(snapshot, split)
    if len(rows) == 0:
        raise Invalid(f"the snapshot's {split} split has no queries to evaluate", field="split")
    evaluator = ir_evaluator(rows, read_corpus(snapshot), split)
    if isinstance(model, SentenceTransformer):
        loaded, path = model, None
    else:
        loaded, path = load_model(model), model
    results = evaluator.run(
        loaded,
        model_path=path,
        folder=vectors_folder(snapshot) if cache else None,
        phase="evaluation",
    )
    metrics = short_metrics(results, split)
    return Evaluation(
        metrics={name: metrics[name] for name in METRICS},
        primary=PRIMARY,
        per_example=list(evaluator.per_query),
    )


@dataclass(frozen=True)
class Comparison:
    """Base, champion and candidate on one split, and the candidate's edge on the primary
    metric as a paired bootstrap 95% interval (what the promotion gate decides on)."""

    split: str
    base: Evaluation
    champion: Evaluation
    candidate: Evaluation
    interval: Interval

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "primary": PRIMARY,
            "base": self.base.metrics,
            "champion": self.champion.metrics,
            "candidate": self.candidate.metrics,
            "interval": vars(self.interval),
        }


def compare(
    base: str | Path,
    champion: str | Path,
    candidate: str | Path,
    snapshot: Path,
    samples: int = 1000,
    seed: int = 13,
    split: str = "test",
) -> Comparison:
    """Evaluate the three models (each path once: the champion is often the base)."""
    done: dict[str, Evaluation] = {}
    for model in (base, champion, candidate):
        if str(model) not in done:
            done[str(model)] = evaluate(model, snapshot, split)
    ours, theirs = done[str(candidate)], done[str(champion)]
    interval = paired_bootstrap(ours.per_example, theirs.per_example, samples=samples, seed=seed)
    return Comparison(split, done[str(base)], theirs, ours, interval)

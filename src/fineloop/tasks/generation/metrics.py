"""How close a generated reply is to the reference one, per example, in [0, 1].

edit_ratio (rapidfuzz's normalized Indel similarity), rouge_l (ROUGE-L F1), bleu (sacrebleu
sentence BLEU / 100) and embedding_cosine (all-MiniLM-L6-v2, the packaged embedding model,
loaded once per process). Each library does the measuring; this module only lines them up.
"""

from __future__ import annotations

from functools import cache
from typing import Any


def edit_ratio(generated: list[str], references: list[str]) -> list[float]:
    from rapidfuzz import fuzz

    return [fuzz.ratio(g, r) / 100.0 for g, r in zip(generated, references, strict=True)]


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(generated: list[str], references: list[str]) -> list[float]:
    scorer = _rouge()
    return [
        float(scorer.score(r, g)["rougeL"].fmeasure)
        for g, r in zip(generated, references, strict=True)
    ]


def bleu(generated: list[str], references: list[str]) -> list[float]:
    from sacrebleu.metrics.bleu import BLEU

    scorer = BLEU(effective_order=True)  # sentence-level: no zero for a missing 4-gram order
    return [
        scorer.sentence_score(g, [r]).score / 100.0
        for g, r in zip(generated, references, strict=True)
    ]


@cache
def _embedder() -> Any:
    """The packaged MiniLM, loaded once per process (on the CPU: a few ms per sentence)."""
    from sentence_transformers import SentenceTransformer

    from fineloop.tasks.embedding.config import packaged_minilm_path

    return SentenceTransformer(packaged_minilm_path(), device="cpu")


def embedding_cosine(generated: list[str], references: list[str]) -> list[float]:
    model = _embedder()
    left = model.encode(generated, batch_size=64, normalize_embeddings=True)
    right = model.encode(references, batch_size=64, normalize_embeddings=True)
    return [float(a @ b) for a, b in zip(left, right, strict=True)]


SIMILARITIES = {
    "edit_ratio": edit_ratio,
    "rouge_l": rouge_l,
    "bleu": bleu,
    "embedding_cosine": embedding_cosine,
}

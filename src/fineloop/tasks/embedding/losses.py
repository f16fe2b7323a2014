"""Training losses by name: what each one reads, and how a snapshot split becomes that.

A snapshot split has one row per (query, positive item): `anchor`, `positive`, `negatives`
(hard negatives, possibly none), `score` (graded, in [0, 1]), `label` (1) and bookkeeping
columns. Each
loss wants its own columns, in order (sentence-transformers feeds the text columns to the
loss positionally and takes a `label`/`score` column as the target), so each registered
`LossSpec` carries a `prepare` that builds exactly those columns.

Built-ins register through `register_loss`, the same call a plugin's entry point (group
`fineloop.losses`, pointing at a `LossSpec`) ends in. Nothing here imports torch at module
load: the config validates loss names in the API process.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from fineloop.errors import Conflict, Invalid

if TYPE_CHECKING:
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from fineloop.tasks.embedding.config import EmbeddingTrainConfig

GROUP = "fineloop.losses"
NEGATIVE_SCORE = 0.0  # graded target of a negative pair: the bottom of the [0, 1] scale


@dataclass
class Negatives:
    """Hard negatives per row, topped up with random catalog items that are not positives
    of the row's query (what in-batch negatives would be anyway), deterministic by seed."""

    corpus: list[str]
    positives: dict[str, set[str]]  # anchor -> texts of every item judged right for it
    seed: int
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def pick(self, anchor: str, mined: list[str], k: int) -> list[str]:
        right = self.positives.get(anchor, set())
        chosen = list(dict.fromkeys(text for text in mined if text not in right))[:k]
        attempts = 0
        while len(chosen) < k and self.corpus and attempts < 50 * k:
            attempts += 1
            text = self._rng.choice(self.corpus)
            if text not in right and text not in chosen:
                chosen.append(text)
        if len(chosen) < k:  # a catalog with fewer other items than k: repeat what there is
            if not chosen:
                raise Invalid("the catalog has no item that is not a positive: no negatives")
            chosen += [chosen[i % len(chosen)] for i in range(k - len(chosen))]
        return chosen


Prepare = Callable[["Dataset", "Negatives", int], "Dataset"]
Build = Callable[["SentenceTransformer", "EmbeddingTrainConfig"], "nn.Module"]


@dataclass(frozen=True)
class LossSpec:
    """One loss: how to build it, which columns it reads, and how to make them."""

    name: str
    summary: str
    columns: str
    build: Build
    prepare: Prepare
    in_batch_negatives: bool = False  # then batches must not repeat a text (no-duplicates)


_REGISTRY: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec, *, replace: bool = False) -> LossSpec:
    if spec.name in _REGISTRY and not replace:
        raise Conflict(f"a loss named {spec.name!r} is already registered", field="loss")
    _REGISTRY[spec.name] = spec
    return spec


@cache
def _load_plugins() -> None:
    for entry in entry_points(group=GROUP):
        loaded: Any = entry.load()
        spec = loaded() if callable(loaded) and not isinstance(loaded, LossSpec) else loaded
        if isinstance(spec, LossSpec) and spec.name not in _REGISTRY:
            register_loss(spec)


def available_losses() -> dict[str, LossSpec]:
    _load_plugins()
    return dict(_REGISTRY)


def get_loss(name: str) -> LossSpec:
    known = available_losses()
    if name not in known:
        raise Invalid(f"unknown loss {name!r}; valid: {', '.join(sorted(known))}", field="loss")
    return known[name]


# --- preparing columns --------------------------------------------------------------------


def with_negatives(rows: Dataset, negatives: Negatives, k: int) -> Dataset:
    """(anchor, positive, negative_1..k): the layout MNRL reads hard negatives from."""
    from datasets import Dataset

    columns: dict[str, list[str]] = {"anchor": rows["anchor"], "positive": rows["positive"]}
    picked = [
        negatives.pick(a, m, k) for a, m in zip(rows["anchor"], rows["negatives"], strict=True)
    ]
    for i in range(k):
        columns[f"negative_{i + 1}"] = [row[i] for row in picked]
    return Dataset.from_dict(columns)


def _pairs(rows: Dataset, negatives: Negatives, k: int, column: str, negative: Any) -> Dataset:
    """(anchor, text, target): each positive with its row's `column`, then max(k, 1)
    negative pairs per row with target `negative` (pair losses learn nothing from
    positives alone)."""
    from datasets import Dataset

    anchors: list[str] = []
    texts: list[str] = []
    targets: list[Any] = []
    for anchor, positive, mined, target in zip(
        rows["anchor"], rows["positive"], rows["negatives"], rows[column], strict=True
    ):
        anchors.append(anchor)
        texts.append(positive)
        targets.append(target)
        for text in negatives.pick(anchor, mined, max(k, 1)):
            anchors.append(anchor)
            texts.append(text)
            targets.append(negative)
    return Dataset.from_dict({"anchor": anchors, "text": texts, column: targets})


def graded_pairs(rows: Dataset, negatives: Negatives, k: int) -> Dataset:
    """(anchor, text, score): the row's graded score, negatives at 0."""
    return _pairs(rows, negatives, k, "score", NEGATIVE_SCORE)


def binary_pairs(rows: Dataset, negatives: Negatives, k: int) -> Dataset:
    """(anchor, text, label): the row's label (1: a positive pair), negatives 0."""
    return _pairs(rows, negatives, k, "label", 0)


# --- built-in losses ----------------------------------------------------------------------


def _mnrl(model: SentenceTransformer, config: EmbeddingTrainConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(model)


def _cached_mnrl(model: SentenceTransformer, config: EmbeddingTrainConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
    )

    return CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.cached_mini_batch_size)


def _cosent(model: SentenceTransformer, config: EmbeddingTrainConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    return CoSENTLoss(model)


def _contrastive(model: SentenceTransformer, config: EmbeddingTrainConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import ContrastiveLoss

    return ContrastiveLoss(model)


def _online_contrastive(model: SentenceTransformer, config: EmbeddingTrainConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import OnlineContrastiveLoss

    return OnlineContrastiveLoss(model)


def build_loss(spec: LossSpec, model: SentenceTransformer, config: EmbeddingTrainConfig) -> Any:
    """The loss module, wrapped in MatryoshkaLoss when the config names embedding sizes."""
    loss = spec.build(model, config)
    if not config.matryoshka_dims:
        return loss
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    full = model.get_embedding_dimension() or 0
    too_big = [dim for dim in config.matryoshka_dims if dim > full]
    if too_big:
        raise Invalid(
            f"matryoshka_dims {too_big} exceed the model's embedding size {full}",
            field="train.matryoshka_dims",
        )
    return MatryoshkaLoss(model, loss, config.matryoshka_dims)


_TRIPLETS = "(anchor, positive, negative_1..k); in-batch positives are negatives too"
for _spec in (
    LossSpec("mnrl", "MultipleNegativesRankingLoss", _TRIPLETS, _mnrl, with_negatives, True),
    LossSpec(
        "cached_mnrl",
        "CachedMultipleNegativesRankingLoss: mnrl with large batches in little memory",
        _TRIPLETS,
        _cached_mnrl,
        with_negatives,
        True,
    ),
    LossSpec(
        "cosent",
        "CoSENTLoss: orders pairs by graded score",
        "(anchor, text, score): the positive's graded score in [0, 1], 0 for negatives",
        _cosent,
        graded_pairs,
    ),
    LossSpec(
        "contrastive",
        "ContrastiveLoss: pulls positives together, pushes negatives past a margin",
        "(anchor, text, label): 1 for the positive, 0 for negatives",
        _contrastive,
        binary_pairs,
    ),
    LossSpec(
        "online_contrastive",
        "OnlineContrastiveLoss: contrastive on the hard pairs of each batch",
        "(anchor, text, label): 1 for the positive, 0 for negatives",
        _online_contrastive,
        binary_pairs,
    ),
):
    register_loss(_spec)

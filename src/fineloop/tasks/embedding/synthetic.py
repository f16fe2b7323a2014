"""Synthetic queries for catalog items nobody has picked yet (InPars / GPL style).

Feedback teaches the model about the items users found; the rest of the catalog learns
nothing. For up to `max_items` items with no positive feedback (a seeded, fixed choice),
a generation model writes queries (synthetic_writer.py, cached per item content). A query
is kept only if, under the current model, its item ranks in the top `round_trip_top_k` of
the catalog for it (the round-trip filter: a query the item does not answer better than
most of the catalog is noise), it is not one of the users' own queries (which may sit in
validation or test), and it is not a copy of the item's text. Kept queries become examples
of the train split only, at most `share` of it, spread over items round-robin; the builder
mines their negatives as for real rows. Every row they make carries its lineage:
`synthetic`, `generator`, `prompt_hash`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fineloop.config import Settings
from fineloop.data.records import ProjectData
from fineloop.data.splits import normalize_query
from fineloop.errors import validated
from fineloop.tasks.embedding.config import SyntheticQueriesConfig
from fineloop.tasks.embedding.examples import Example

logger = logging.getLogger(__name__)

SYNTHETIC_SCORE = 1.0  # the graded score of a synthetic positive (cosent reads it)
SYNTHETIC_GROUP = "synthetic:"  # prefix of synthetic rows' query_group: apart from users'


@dataclass
class Synthesized:
    """Kept synthetic examples, and the lineage their rows carry."""

    examples: list[Example]
    generator: str
    prompt_hash: str
    generator_identity: str

    def lineage(self) -> dict[str, Any]:
        return {"synthetic": True, "generator": self.generator, "prompt_hash": self.prompt_hash}


REAL_LINEAGE: dict[str, Any] = {"synthetic": False, "generator": "", "prompt_hash": ""}


def project_config(data: ProjectData) -> SyntheticQueriesConfig:
    """The project's `synthetic_queries` training setting (validated again: the policy was
    checked when it was stored, but a stored one may predate a field's bounds)."""
    raw = data.project.train.get("synthetic_queries") or {}
    return validated(SyntheticQueriesConfig, raw, "train.synthetic_queries.")


def prompt_hash(prompt: str) -> str:
    return "sha256:" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def candidates(
    data: ProjectData, examples: Sequence[Example], config: SyntheticQueriesConfig, seed: int
) -> list[tuple[str, str]]:
    """(item id, text) of up to `max_items` items with no positive feedback, chosen by a
    seeded hash of their id (the same ones build after build, spread over the catalog)."""
    picked = {e.item_id for e in examples}
    free = [(i.item_id, i.text) for i in data.items if i.item_id not in picked and i.text.strip()]

    def order(item_id: str) -> str:
        return hashlib.sha256(f"{seed}\x00{item_id}".encode()).hexdigest()

    return sorted(free, key=lambda pair: order(pair[0]))[: config.max_items]


def synthesize(
    data: ProjectData,
    settings: Settings,
    config: SyntheticQueriesConfig,
    *,
    examples: Sequence[Example],
    user_queries: set[str],
    texts: Mapping[str, str],
    model_path: str,
    vectors: Path | None,
    seed: int,
    max_examples: int,
    max_query_chars: int,
    stats: Counter[str],
) -> Synthesized:
    """Kept synthetic examples for items without feedback; counts go to `stats`
    (`user_queries`: normalized texts of every query in the feedback)."""
    from fineloop.tasks.embedding.synthetic_writer import (
        QueryCache,
        QueryWriter,
        cache_file,
        cache_key,
        resolve_generator,
        write_missing,
    )

    items = candidates(data, examples, config, seed)
    generator = resolve_generator(config, settings)
    cache = QueryCache(cache_file(settings, data.project.name))
    keyed = [(cache_key(text, generator, config), text) for _, text in items]
    written = write_missing(
        QueryWriter(generator, config), cache, keyed, max_query_chars=max_query_chars
    )
    stats["synthetic_items"] = len(items)
    stats["synthetic_items_written"] = written
    stats["synthetic_items_cached"] = len(items) - written
    example = config.prompt.replace("{text}", " ")  # a worked example in the prompt
    for name in ("generated", "dropped_user_query", "dropped_copy"):
        stats[f"synthetic_{name}"] = 0  # shown even when nothing is counted
    proposed: list[tuple[str, str]] = []  # (item id, query)
    for (item_id, text), (key, _) in zip(items, keyed, strict=True):
        for query in cache.entries.get(key, []):
            stats["synthetic_generated"] += 1
            if normalize_query(query) in user_queries:
                stats["synthetic_dropped_user_query"] += 1
            elif copies(query, text) or copies(query, example, min_words=3):
                stats["synthetic_dropped_copy"] += 1
            else:
                proposed.append((item_id, query))
    kept = round_trip(proposed, texts, model_path, vectors, config.round_trip_top_k)
    stats["synthetic_dropped_round_trip"] = len(proposed) - len(kept)
    chosen = round_robin(kept, max_examples)
    stats["synthetic_dropped_share"] = len(kept) - len(chosen)
    stats["synthetic_kept"] = len(chosen)
    logger.info(
        "synthetic queries: %d generated for %d items, %d kept (%d failed the round trip)",
        stats["synthetic_generated"],
        len(items),
        len(chosen),
        stats["synthetic_dropped_round_trip"],
    )
    return Synthesized(
        [Example(q, item_id, SYNTHETIC_SCORE) for item_id, q in chosen],
        generator.name,
        prompt_hash(config.prompt),
        generator.identity,
    )


def copies(query: str, text: str, min_words: int = 6) -> bool:
    """Whether a query of `min_words` or more words is a run of `text`: the item's own
    (a small generator often repeats its input: the round trip would keep it, teaching
    nothing) or the prompt's (its worked example, repeated for another item)."""
    words = normalize_query(query)
    return len(words.split()) >= min_words and words in normalize_query(text)


def item_ranks(
    queries: Sequence[tuple[str, str]],
    texts: Mapping[str, str],
    model_path: str,
    vectors: Path | None,
) -> list[int]:
    """The rank (0 = first) of each (item id, query)'s item in the catalog for the query
    under the model; items sharing a text are one candidate, ties rank in the item's favour."""
    from sentence_transformers import SentenceTransformer

    from fineloop.tasks.embedding.corpus_vectors import encode_corpus, encode_texts

    if not queries:
        return []
    model = SentenceTransformer(model_path)
    catalog = sorted(set(texts.values()))
    documents = encode_corpus(
        model, catalog, model_path=model_path, folder=vectors, phase="synthetic"
    )
    asked = encode_texts(model, [query for _, query in queries])
    scores = asked @ documents.T
    position = {text: i for i, text in enumerate(catalog)}
    own = np.array([scores[row, position[texts[item]]] for row, (item, _) in enumerate(queries)])
    return [int(n) for n in (scores > own[:, None]).sum(axis=1)]


def round_trip(
    queries: Sequence[tuple[str, str]],
    texts: Mapping[str, str],
    model_path: str,
    vectors: Path | None,
    top_k: int,
) -> list[tuple[str, str]]:
    """The (item id, query) pairs whose item ranks in the top `top_k` for the query."""
    ranks = item_ranks(queries, texts, model_path, vectors)
    return [pair for pair, rank in zip(queries, ranks, strict=True) if rank < top_k]


def round_robin(kept: Sequence[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """Up to `limit` pairs: every item's first query, then every item's second, ...
    (in the order given), so a cap spreads over items instead of cutting some out."""
    by_item: dict[str, list[tuple[str, str]]] = {}
    for pair in kept:
        by_item.setdefault(pair[0], []).append(pair)
    chosen: list[tuple[str, str]] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(v) for v in by_item.values()):
        chosen += [v[depth] for v in by_item.values() if depth < len(v)]
        depth += 1
    return chosen[:limit]

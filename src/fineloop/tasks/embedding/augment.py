"""Augmentation: paraphrases of the train split's queries for items with few examples.

An item picked once or twice gives the trainer one or two ways of asking for it. For up
to `max_queries` train queries of items with at most `max_item_examples` train examples (a
seeded, fixed choice), the generation model rewrites the query (synthetic_writer.py, the
same writer and cache as synthetic queries, keyed by the query's text and the paraphrase
prompt). A paraphrase is kept if it is none of the users' queries (any split: a test
query must not reach train this way), not a copy of the prompt's example, and its item
still ranks in the top `round_trip_top_k` for it under the current model. Kept ones
become train rows in their source's query group (so a group never straddles splits),
with its score and feedback ids, at most `share` of the train split, round-robin over
items. Their lineage: `synthetic` True, the generator, the paraphrase prompt's hash.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineloop.config import Settings
from fineloop.data.records import ProjectData
from fineloop.data.splits import normalize_query
from fineloop.errors import validated
from fineloop.tasks.embedding.config import AugmentationConfig
from fineloop.tasks.embedding.examples import Example
from fineloop.tasks.embedding.synthetic import copies, prompt_hash, round_robin, round_trip

logger = logging.getLogger(__name__)


@dataclass
class Paraphrased:
    """Kept paraphrase examples, each one's source query group, and their lineage."""

    examples: list[Example]
    groups: dict[tuple[str, str], str]  # (paraphrase, item id) → the source's query group
    generator: str
    prompt_hash: str
    generator_identity: str

    def lineage(self) -> dict[str, Any]:
        return {"synthetic": True, "generator": self.generator, "prompt_hash": self.prompt_hash}


def project_augmentation(data: ProjectData) -> AugmentationConfig:
    """The project's `augmentation` training setting, validated."""
    raw = data.project.train.get("augmentation") or {}
    return validated(AugmentationConfig, raw, "train.augmentation.")


def sources(
    rows: Sequence[Mapping[str, Any]], config: AugmentationConfig, seed: int
) -> dict[str, list[Mapping[str, Any]]]:
    """Train query → its rows whose item has few train examples, for up to `max_queries`
    queries chosen by a seeded hash of their text."""
    train = [row for row in rows if row["split"] == "train"]
    per_item = Counter(row["positive_id"] for row in train)
    found: dict[str, list[Mapping[str, Any]]] = {}
    for row in train:
        if per_item[row["positive_id"]] <= config.max_item_examples:
            found.setdefault(row["anchor"], []).append(row)

    def order(query: str) -> str:
        return hashlib.sha256(f"{seed}\x00{query}".encode()).hexdigest()

    return {query: found[query] for query in sorted(found, key=order)[: config.max_queries]}


def paraphrase(
    data: ProjectData,
    settings: Settings,
    config: AugmentationConfig,
    *,
    rows: Sequence[Mapping[str, Any]],
    user_queries: set[str],
    texts: Mapping[str, str],
    model_path: str,
    vectors: Path | None,
    seed: int,
    max_examples: int,
    max_query_chars: int,
    stats: Counter[str],
) -> Paraphrased:
    """Kept paraphrases of the real train rows in `rows`; counts go to `stats`."""
    from fineloop.tasks.embedding.synthetic_writer import (
        QueryCache,
        QueryWriter,
        cache_file,
        cache_key,
        resolve_generator,
        write_missing,
    )

    wanted = sources(rows, config, seed)
    writer_config = config.writer_config()
    generator = resolve_generator(writer_config, settings)
    cache = QueryCache(cache_file(settings, data.project.name))
    keyed = [(cache_key(query, generator, writer_config), query) for query in wanted]
    written = write_missing(
        QueryWriter(generator, writer_config), cache, keyed, max_query_chars=max_query_chars
    )
    stats["augment_queries"] = len(wanted)
    stats["augment_queries_written"] = written
    example = writer_config.prompt.replace("{text}", " ")
    for name in ("generated", "dropped_user_query", "dropped_copy"):
        stats[f"augment_{name}"] = 0
    proposed: list[tuple[str, str]] = []  # (item id, paraphrase)
    source_of: dict[tuple[str, str], Mapping[str, Any]] = {}
    for (key, _), source_rows in zip(keyed, wanted.values(), strict=True):
        for text in cache.entries.get(key, []):
            stats["augment_generated"] += 1
            if normalize_query(text) in user_queries:
                stats["augment_dropped_user_query"] += 1
                continue
            if copies(text, example, min_words=3):
                stats["augment_dropped_copy"] += 1
                continue
            for row in source_rows:
                pair = (row["positive_id"], text)
                if pair not in source_of:
                    source_of[pair] = row
                    proposed.append(pair)
    kept = round_trip(proposed, texts, model_path, vectors, config.round_trip_top_k)
    stats["augment_dropped_round_trip"] = len(proposed) - len(kept)
    chosen = round_robin(kept, max_examples)
    stats["augment_dropped_share"] = len(kept) - len(chosen)
    stats["augment_kept"] = len(chosen)
    logger.info(
        "augmentation: %d paraphrases of %d queries, %d kept",
        stats["augment_generated"],
        len(wanted),
        len(chosen),
    )
    sourced = [(item, text, source_of[item, text]) for item, text in chosen]
    made = [
        Example(text, item, row["score"], set(row["feedback_ids"])) for item, text, row in sourced
    ]
    groups = {(text, item): str(row["query_group"]) for item, text, row in sourced}
    return Paraphrased(
        made, groups, generator.name, prompt_hash(writer_config.prompt), generator.identity
    )

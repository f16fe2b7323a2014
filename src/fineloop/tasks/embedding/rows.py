"""Examples + negatives → the rows of a snapshot, in a canonical order.

Negatives belong to a query *group* (paraphrases share what users rejected), and a group's
positives are never its negatives: when one paraphrase's right item was rejected for
another, the positive wins and the conflict is counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fineloop.data.splits import SPLITS, QueryGroups
from fineloop.tasks.embedding.examples import Example, Signal


def group_positives(examples: Iterable[Example], groups: QueryGroups) -> dict[str, set[str]]:
    """Group key → ids of every item that is right for some query of the group."""
    positives: dict[str, set[str]] = {}
    for example in examples:
        positives.setdefault(groups.key(example.query), set()).add(example.item_id)
    return positives


@dataclass
class Rejection:
    """How a query group rejected one item: by which events, and at best at what rank."""

    feedback_ids: list[int] = field(default_factory=list)
    best_rank: int = 1 << 30

    def order(self, item_id: str) -> tuple[int, int, int, str]:
        """Most often rejected first, then shown highest (the hardest), then earliest."""
        return (-len(self.feedback_ids), self.best_rank, min(self.feedback_ids), item_id)


def _rejections(signals: Iterable[Signal], groups: QueryGroups) -> dict[str, dict[str, Rejection]]:
    """Group key → rejected item id → how it was rejected."""
    found: dict[str, dict[str, Rejection]] = {}
    for signal in signals:
        if not signal.positive:
            by_item = found.setdefault(groups.key(signal.query), {})
            rejection = by_item.setdefault(signal.item_id, Rejection())
            rejection.feedback_ids.append(signal.feedback_id)
            rejection.best_rank = min(rejection.best_rank, signal.rank)
    return found


def assemble_rows(
    examples: list[Example],
    signals: list[Signal],
    groups: QueryGroups,
    split_of: dict[str, str],
    texts: dict[str, str],
    mined: dict[str, list[str]],
    *,
    negatives_per_query: int,
    stats: Counter[str],
) -> list[dict[str, Any]]:
    """One row per example, with its split and up to `negatives_per_query` negatives:
    explicit rejections first (most often rejected, then shown highest, then earliest),
    then mined ones."""
    positives = group_positives(examples, groups)
    rejections = _rejections(signals, groups)
    for key, by_item in rejections.items():
        if key not in positives:
            stats["negative_only_groups"] += 1
        stats["conflicting_negatives"] += len(by_item.keys() & positives.get(key, set()))
    rows: list[dict[str, Any]] = []
    for example in examples:
        key = groups.key(example.query)
        known = positives[key]
        rejected = rejections.get(key, {})
        explicit = sorted(
            (i for i in rejected if i not in known), key=lambda i: rejected[i].order(i)
        )
        mined_ids = [i for i in mined.get(example.query, []) if i not in known]
        chosen = list(dict.fromkeys(explicit + mined_ids))[:negatives_per_query]
        used_explicit = [i for i in chosen if i in rejected]
        stats["explicit_negatives"] += len(used_explicit)
        stats["mined_negatives"] += len(chosen) - len(used_explicit)
        feedback_ids = set(example.feedback_ids)
        for item_id in used_explicit:
            feedback_ids.update(rejected[item_id].feedback_ids)
        rows.append(
            {
                "split": split_of[key],
                "anchor": example.query,
                "positive": texts[example.item_id],
                "positive_id": example.item_id,
                "negatives": [texts[i] for i in chosen],
                "negative_ids": chosen,
                "query_group": key,
                "feedback_ids": sorted(feedback_ids),
                "score": round(example.score, 6),
                "label": 1,
            }
        )
    rows.sort(
        key=lambda r: (SPLITS.index(r["split"]), r["query_group"], r["anchor"], r["positive_id"])
    )
    return rows

"""A snapshot written by hand in the layout `build` writes (pairs/, corpus/, snapshot.json),
so training and evaluation are tested without a store, on data whose answers are learnable:
every word is in the tiny model's vocabulary, each item has four paraphrased queries (two
to train, one to validate, one to test), and the query shares a content word with its item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ITEMS = {
    "i01": "reset password forgot login",
    "i02": "change account email",
    "i03": "delete close account",
    "i04": "export data file",
    "i05": "card lost stolen block",
    "i06": "refund payment money",
    "i07": "money transfer",
    "i08": "invoice bill",
    "i09": "cancel subscription plan",
    "i10": "invite team colleague",
}
# item -> (train, train, validation, test)
QUERIES = {
    "i01": (
        "forgot my password",
        "how do i reset my password",
        "can i reset login",
        "forgot login",
    ),
    "i02": (
        "change my email",
        "how do i change email",
        "email change for account",
        "change the email on my account",
    ),
    "i03": (
        "delete my account",
        "how do i close my account",
        "close account",
        "delete the account",
    ),
    "i04": (
        "export my data",
        "get my data file",
        "export a file",
        "data export",
    ),
    "i05": (
        "lost my card",
        "how do i block my card",
        "my card is stolen",
        "card lost",
    ),
    "i06": (
        "refund my payment",
        "get money for a refund",
        "payment refund",
        "can i get a refund",
    ),
    "i07": (
        "transfer money",
        "how do i transfer",
        "money transfer to an account",
        "transfer my money",
    ),
    "i08": (
        "get my invoice",
        "where is my bill",
        "show invoice",
        "find the bill",
    ),
    "i09": (
        "cancel my subscription",
        "cancel the plan",
        "how do i cancel subscription",
        "cancel plan",
    ),
    "i10": (
        "invite a colleague",
        "invite to team",
        "how do i invite my team",
        "team invite",
    ),
}
BUILDING = ("wall", "door", "window", "floor", "roof", "stair", "column", "beam")
for number, part in enumerate(BUILDING, start=11):
    ITEMS[f"i{number}"] = part
    QUERIES[f"i{number}"] = (
        f"select all {part}",
        f"show the {part}",
        f"find {part}",
        f"where is the {part}",
    )
SPLIT_OF_POSITION = ("train", "train", "validation", "test")


REAL = {"synthetic": False, "generator": "", "prompt_hash": ""}  # rows from feedback


def rows(
    extra: dict[str, list[tuple[str, str]]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The splits; `extra` adds (query, item id) rows to a split."""
    ids = sorted(ITEMS)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}
    feedback = 0
    for n, item_id in enumerate(ids):
        other = ids[(n + 1) % len(ids)]  # a neighbour as the "rejected" item
        for position, query in enumerate(QUERIES[item_id]):
            feedback += 1
            no_negative = (n + position) % 4 == 0  # some rows rely on random negatives
            out[SPLIT_OF_POSITION[position]].append(
                {
                    "anchor": query,
                    "positive": ITEMS[item_id],
                    "positive_id": item_id,
                    "negatives": [] if no_negative else [ITEMS[other]],
                    "negative_ids": [] if no_negative else [other],
                    "query_group": query,
                    "feedback_ids": [feedback],
                    "score": 1.0 if position % 2 == 0 else 0.75,
                    "label": 1,
                    **REAL,
                }
            )
    for split, pairs in (extra or {}).items():
        for query, item_id in pairs:
            feedback += 1
            out[split].append(
                {
                    "anchor": query,
                    "positive": ITEMS[item_id],
                    "positive_id": item_id,
                    "negatives": [],
                    "negative_ids": [],
                    "query_group": query,
                    "feedback_ids": [feedback],
                    "score": 1.0,
                    "label": 1,
                    **REAL,
                }
            )
    return out


def write_snapshot(
    out_dir: Path,
    snapshot_id: str = "handmade0001",
    extra: dict[str, list[tuple[str, str]]] | None = None,
) -> Path:
    from datasets import Dataset, DatasetDict, Features

    from fineloop.tasks.embedding.build import pair_features

    features = Features(pair_features())
    splits = rows(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    DatasetDict(
        {name: Dataset.from_list(split, features=features) for name, split in splits.items()}
    ).save_to_disk(str(out_dir / "pairs"))
    Dataset.from_dict({"id": list(ITEMS), "text": list(ITEMS.values())}).save_to_disk(
        str(out_dir / "corpus")
    )
    meta = {
        "id": snapshot_id,
        "project": "handmade",
        "task": "embedding",
        "config": {"seed": 13},
        "splits": {name: len(split) for name, split in splits.items()},
        "stats": {},
        "feedback_watermark": 0,
        "fineloop_version": "test",
    }
    (out_dir / "snapshot.json").write_text(json.dumps(meta, indent=2))
    return out_dir

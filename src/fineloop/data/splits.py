"""Query groups and the train/validation/test split, so no query leaks across splits.

A *group* is everything that must stay on one side of the split: queries equal after
normalization (case, punctuation, whitespace) and queries the app tagged with the same
`metadata.group` (paraphrases). Groups are joined transitively with a union-find, so a
paraphrase tagged once pulls its normalized twins along.

Assignment is by a seeded hash of the group's key, not by shuffling: a group stays in the
same split as feedback grows. That matters in the loop, where the champion (trained on an
older snapshot) and the candidate are compared on the newest test split: if groups moved
from train to test between snapshots, the champion would be graded on queries it trained on.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

SPLITS = ("train", "validation", "test")
_SPACES = re.compile(r"\s+")


def normalize_query(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: 'Reset  my password?' becomes
    'reset my password'."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in folded)
    return _SPACES.sub(" ", kept).strip()


class QueryGroups:
    """Union-find over query texts and app-given group names."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def _find(self, node: str) -> str:
        self._parent.setdefault(node, node)
        root = node
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[node] != root:  # path compression
            self._parent[node], node = root, self._parent[node]
        return root

    def _union(self, a: str, b: str) -> None:
        root_a, root_b = self._find(a), self._find(b)
        if root_a != root_b:
            # The smaller label becomes the root: the result does not depend on input order.
            low, high = sorted((root_a, root_b))
            self._parent[high] = low

    def add(self, query: str, group: str | None) -> None:
        node = _query_node(query)
        self._find(node)
        if group is not None:
            self._union(node, _group_node(group))

    def key(self, query: str) -> str:
        """The group of `query` (added before): its smallest app-given group name if it has
        one, else its smallest normalized query text."""
        return _label(self._find(_query_node(query)))


def _query_node(query: str) -> str:
    return "q:" + normalize_query(query)


def _group_node(group: str) -> str:
    return "g:" + group


def _label(root: str) -> str:
    # "g:" sorts before "q:", so a root is an app-given group whenever its set has one.
    return root[2:]


def _position(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the group key."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    keys: Iterable[str], *, seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, str]:
    """Map each group key to "train", "validation" or "test".

    Each group lands by its seeded hash: test below `test_fraction`, validation below
    `test_fraction + validation_fraction`, train above. Small datasets are then corrected,
    so that train is never empty; with 2+ groups test gets at least one (if test_fraction
    > 0); with 3+ groups validation gets at least one (if validation_fraction > 0). The
    corrections move the groups closest to the boundary, so they too are deterministic.
    """
    positions = {key: _position(seed, key) for key in sorted(set(keys))}
    split: dict[str, str] = {}
    for key, u in positions.items():
        if u < test_fraction:
            split[key] = "test"
        elif u < test_fraction + validation_fraction:
            split[key] = "validation"
        else:
            split[key] = "train"

    def members(name: str) -> list[str]:
        return sorted((k for k in split if split[k] == name), key=lambda k: (positions[k], k))

    n = len(split)
    minimum = {
        "train": 1 if n else 0,
        "test": 1 if n >= 2 and test_fraction > 0 else 0,
        "validation": 1 if n >= 3 and validation_fraction > 0 else 0,
    }
    for name in ("train", "test", "validation"):
        if len(members(name)) >= minimum[name]:
            continue
        # Take from a split that can spare a group (train first), the one nearest the edge.
        donor = next(d for d in SPLITS if d != name and len(members(d)) > minimum[d])
        taken = members(donor)
        split[taken[-1] if name == "train" else taken[0]] = name
    return split

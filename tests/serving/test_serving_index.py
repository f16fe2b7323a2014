"""VectorIndex: exact FAISS search with metadata filters, in-place replacement and removal."""

from __future__ import annotations

import numpy as np
import pytest

from fineloop.tasks.embedding.serving.changes import KEEP, ChangeLog
from fineloop.tasks.embedding.serving.index import VectorIndex


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


Filled = tuple[VectorIndex, np.ndarray]


@pytest.fixture
def filled() -> Filled:
    rng = np.random.default_rng(3)
    vectors = unit(rng, 300)
    metadata: list[dict[str, object]] = [
        {"colour": ["red", "green", "blue"][i % 3], "size": i % 5, "tags": {"a": i % 2}}
        for i in range(300)
    ]
    index = VectorIndex(16)
    rows = [1000 + i for i in range(300)]  # store row ids, not positions
    index.upsert(rows, [f"item-{i}" for i in range(300)], metadata, vectors)
    return index, vectors


def brute_force(vectors: np.ndarray, query: np.ndarray, keep: list[int], k: int) -> list[int]:
    scores = vectors @ query
    ordered = sorted(keep, key=lambda i: -scores[i])
    return [1000 + i for i in ordered[:k]]


def test_search_equals_brute_force_with_and_without_filters(filled: Filled) -> None:
    index, vectors = filled
    query = unit(np.random.default_rng(9), 1)[0]
    everything = list(range(300))

    plain = [row for row, _ in index.search(query, 10)]
    red = [row for row, _ in index.search(query, 10, index.matching({"colour": "red"}))]
    small = index.matching({"colour": ["red", "blue"], "size": 2.0})  # 2.0 equals 2
    nested = index.matching({"tags": {"a": 1}})

    assert plain == brute_force(vectors, query, everything, 10)
    assert red == brute_force(vectors, query, [i for i in everything if i % 3 == 0], 10)
    expected = [i for i in everything if i % 3 != 1 and i % 5 == 2]
    assert small is not None and sorted(small.tolist()) == [1000 + i for i in expected]
    assert [row for row, _ in index.search(query, 500, small)] == brute_force(
        vectors, query, expected, 500
    )
    assert nested is not None and len(nested) == 150
    assert index.matching({"colour": "purple"}).tolist() == []  # type: ignore[union-attr]
    assert index.matching({}) is None


def test_replace_vectors_and_metadata_then_remove(filled: Filled) -> None:
    index, _ = filled
    target = unit(np.random.default_rng(11), 1)

    index.upsert([1005], ["item-5"], [{"colour": "gold"}], target)
    assert index.search(target[0], 1) == [(1005, pytest.approx(1.0, abs=1e-5))]
    assert index.matching({"colour": "gold"}).tolist() == [1005]  # type: ignore[union-attr]
    assert 1005 not in index.matching({"colour": "red"}).tolist()  # type: ignore[union-attr]
    assert len(index) == 300

    index.upsert([1005], ["item-5"], [{"colour": "red"}], None)  # metadata only
    assert np.allclose(index.vectors([1005]), target)
    assert 1005 in index.matching({"colour": "red"}).tolist()  # type: ignore[union-attr]

    index.remove([1005, 1006])
    assert len(index) == 298
    assert "item-5" not in index.row_of
    assert all(row not in (1005, 1006) for row, _ in index.search(target[0], 300))


def test_change_log_hands_each_reader_what_it_missed() -> None:
    log = ChangeLog()
    first = log.record("p", ["a", "b"])
    log.record("other", ["z"])
    second = log.record("p", ["c"])

    assert log.since("p", 0) == ({"a", "b", "c"}, second + 0)
    assert log.since("p", first) == ({"c"}, second)
    assert log.since("p", second) == (set(), second)

    for n in range(KEEP + 1):
        log.record("p", [str(n)])
    assert log.since("p", second)[0] is None  # fell too far behind: resync
    log.record_all("p")
    assert log.since("p", log.seq() - 1)[0] is None

"""Catalog: item vectors that follow the store, re-embedding only what changed, cached on
disk per version so a restart embeds nothing it already had."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fineloop.config import Settings
from fineloop.operations import store_items
from fineloop.schemas import ItemIn
from fineloop.serving.versions import ensure_champion
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks.embedding.predict import EmbeddingPredictor
from fineloop.tasks.embedding.serving.catalog import Catalog, VersionRef
from fineloop.tasks.embedding.serving.persist import VectorCache
from serving.helpers import CATALOG


class Counting:
    """The real predictor, counting the texts it is asked to embed."""

    def __init__(self, model: Path) -> None:
        self.inner = EmbeddingPredictor(str(model))
        self.dimension = self.inner.dimension
        self.embedded = 0

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.embedded += len(texts)
        return self.inner.encode(texts, batch_size)


@pytest.fixture
def setup(store: Store, catalog: str, tiny_model: Path) -> tuple[int, VersionRef, Counting]:
    version = ensure_champion(store, catalog)
    with store.read() as session:
        project_id = get_project(session, catalog).id
    return project_id, version, Counting(tiny_model)


def top(catalog: Catalog, encoder: Counting, query: str) -> list[str]:
    vector = encoder.inner.encode([query])[0]
    return [catalog.index.item_of[row] for row, _ in catalog.index.search(vector, 3)]


def test_a_restart_reads_vectors_back_and_embeds_only_changed_texts(
    store: Store, settings: Settings, setup: tuple[int, VersionRef, Counting]
) -> None:
    project_id, version, encoder = setup

    def fresh_catalog() -> Catalog:
        cache = VectorCache.for_version(settings, "shop", version.number, version.id, 32)
        built = Catalog(project_id, version, encoder, cache)
        built.load_all(store)
        return built

    first = fresh_catalog()
    first.save()
    assert encoder.embedded == len(CATALOG)

    second = fresh_catalog()
    assert encoder.embedded == len(CATALOG)  # nothing embedded again
    assert top(second, encoder, "refund payment") == top(first, encoder, "refund payment")
    rows = sorted(first.texts)
    assert np.allclose(second.index.vectors(rows), first.index.vectors(rows))

    store_items(store, "shop", [ItemIn(id="refund", text="roof beam stair")])
    fresh_catalog()
    assert encoder.embedded == len(CATALOG) + 1


def test_refresh_embeds_new_texts_only(
    store: Store, setup: tuple[int, VersionRef, Counting]
) -> None:
    project_id, version, encoder = setup
    catalog = Catalog(project_id, version, encoder)
    catalog.load_all(store)

    store_items(
        store,
        "shop",
        [
            ItemIn(id="reset", text="how do i reset my password", metadata={"new": True}),
            ItemIn(id="roof", text="the roof window"),
        ],
    )
    catalog.refresh(store, ["reset", "roof"])

    assert encoder.embedded == len(CATALOG) + 1  # the metadata change needed no embedding
    assert catalog.index.metadata[catalog.index.row_of["reset"]] == {"new": True}
    assert top(catalog, encoder, "the roof window")[0] == "roof"


def test_resync_finds_writes_it_was_not_told_about(
    store: Store, setup: tuple[int, VersionRef, Counting]
) -> None:
    project_id, version, encoder = setup
    catalog = Catalog(project_id, version, encoder)
    catalog.load_all(store)

    # written as another process would (a CLI import): no hook tells the catalog
    store_items(store, "shop", [ItemIn(id="stair", text="stair and column")])
    changed = catalog.resync(store)

    assert changed == 1
    assert top(catalog, encoder, "stair and column")[0] == "stair"
    assert len(catalog) == len(CATALOG) + 1

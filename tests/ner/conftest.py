"""Session fixtures of the NER model tests: the tiny NER base, a snapshot of the
maintenance corpus and one model trained on it, each built once and shared (tests that
change a folder copy it first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ner.model_helpers import RecordingSink, build_tiny_ner_base, corpus, write_snapshot


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second OpenMP thread on 2 shared cores, and lose a
    lot to synchronisation under load (see tests/generation/conftest.py). Restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ner_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT without a head, whose tokenizer splits words into sub-words."""
    return build_tiny_ner_base(tmp_path_factory.mktemp("ner-base"))


@pytest.fixture(scope="session")
def ner_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 texts to train on; validation and test are 10 of them (a model that learns
    its train split scores well on both)."""
    rows = corpus(30)
    splits = {"train": rows, "validation": rows[:10], "test": rows[10:20]}
    return write_snapshot(tmp_path_factory.mktemp("ner-snapshot"), splits)


@pytest.fixture(scope="session")
def ner_trained(
    ner_base: Path, ner_snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any]:
    """A model trained on the snapshot (fast settings), and the sink that watched it."""
    from fineloop.tasks.ner.config import NerTrainConfig
    from fineloop.tasks.ner.train import train

    sink = RecordingSink()
    config = NerTrainConfig(
        learning_rate=5e-3, epochs=30, batch_size=8, early_stopping_patience=3, logging_steps=2
    )
    out = train(ner_snapshot, str(ner_base), config, tmp_path_factory.mktemp("ner-trained"), sink)
    return out, sink

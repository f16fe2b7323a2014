"""The project's own recent queries, embedded, for tuning an approximate index's recall.

Item vectors stand in for queries when a project has none, but real queries sit elsewhere
in the space (short questions against long items), and the recall the README promises is
the one users get: so a fresh index of a version measures it on what users last asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from sqlalchemy import select

from fineloop.store import Store
from fineloop.store.schema import Interaction

RECENT_INTERACTIONS = 2_000
MOST = 500  # queries embedded: a few seconds on a CPU, in the background build


class _Encoder(Protocol):
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


def recent_queries(
    store: Store, project_id: int, encoder: _Encoder
) -> Callable[[], np.ndarray | None]:
    """A callable (run only if the index needs it) embedding the project's latest distinct
    query texts; None when it has none."""

    def embed() -> np.ndarray | None:
        from fineloop.tasks.embedding.serving.memory import query_text

        with store.read() as session:
            inputs = session.scalars(
                select(Interaction.input)
                .where(Interaction.project_id == project_id)
                .order_by(Interaction.created_at.desc())
                .limit(RECENT_INTERACTIONS)
            ).all()
        texts = list(dict.fromkeys(t for t in map(query_text, inputs) if t))[:MOST]
        return encoder.encode(texts, batch_size=64) if texts else None

    return embed

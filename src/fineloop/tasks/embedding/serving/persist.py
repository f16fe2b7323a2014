"""Item vectors kept on disk per model version, so a restart re-embeds only what changed.

Embedding 100,000 items with MiniLM takes minutes on a CPU; reading them back takes well
under a second. The file is `<artifact_root>/<project>/index/v<N>-<id>.npz` holding the
vectors and a 64-bit hash of each item's text: a text found with the same hash reuses its
vector, anything else is embedded. Writes go to a temporary file renamed into place, so a
crash never leaves half a file; an unreadable or mismatched file is ignored (and rebuilt).
With a URL artifact root (fsspec) the file stays on this machine, in `artifacts.root`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fineloop import artifacts
from fineloop.config import Settings

log = logging.getLogger("fineloop.serving")


def text_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


class VectorCache:
    """Vectors by text hash for one (project, version), read once and written on request."""

    def __init__(self, path: Path, dimension: int) -> None:
        self.path = path
        self.dimension = dimension
        self.saved_at = 0.0
        self._known: dict[int, np.ndarray] = {}
        self._read()

    @classmethod
    def for_version(
        cls, settings: Settings, project: str, number: int, version_id: int, dimension: int
    ) -> VectorCache | None:
        folder = artifacts.root(settings) / project / "index"
        return cls(folder / f"v{number}-{version_id}.npz", dimension)

    def lookup(self, keys: Sequence[int]) -> list[np.ndarray | None]:
        return [self._known.get(key) for key in keys]

    def forget(self) -> None:
        """Drop what was read: after the build it would only hold memory."""
        self._known = {}

    def save(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(scratch, keys=keys.astype(np.int64), vectors=vectors.astype(np.float32))
        scratch.replace(self.path)
        self.saved_at = time.monotonic()

    def _read(self) -> None:
        if not self.path.exists():
            return
        try:
            with np.load(self.path) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable vector cache %s", self.path)
            return
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension or len(keys) != len(vectors):
            log.warning("ignoring vector cache %s: shape %s", self.path, vectors.shape)
            return
        self._known = dict(zip(keys.tolist(), vectors, strict=True))

"""Item vectors kept on disk per model, shared by serving and training jobs.

Embedding 100,000 items with MiniLM takes minutes on a CPU; reading them back takes well
under a second. One file per model, `<artifact_root>/<project>/index/<identity>.npz`,
holds unit vectors and a 64-bit hash of each item's text: a text found with the same hash
reuses its vector, anything else is embedded. The identity is a digest of the model
folder's files (weights, configs, tokenizer; not the stamp or model card) and the
max_seq_length it encodes with, so a version, the scratch folder it was trained in and
the base model it came from each find their own vectors wherever they sit. A model that
is not a local folder gets the older per-version name `v<N>-<id>.npz`, also read as a
fallback so an index built before the change is not re-embedded.

The file records the encoder that made its vectors (`torch-fp32`, `onnx`, `torch-bf16`):
serving takes any, a training job only those that match fp32 torch (`EXACT`), so a
gate never compares a champion's bf16 vectors with a candidate's fp32 ones. Writes go to
a temporary file renamed into place, so a crash never leaves half a file; an unreadable
or mismatched file is ignored (and rebuilt). With a URL artifact root (fsspec) the file
stays on this machine, in `artifacts.root`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fineloop import artifacts
from fineloop.config import Settings

log = logging.getLogger("fineloop.serving")

# from most to least exact; a file mixing encoders is labelled with its least exact one
ENCODERS = ("torch-fp32", "onnx", "torch-bf16", "unknown")
EXACT = frozenset({"torch-fp32", "onnx"})  # ONNX agrees with torch to a cosine of 0.9999999
_NOT_THE_MODEL = {"fineloop.json", "README.md"}  # the stamp and model card, written later
_CHUNK = 1 << 20


def text_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def least_exact(*encoders: str) -> str:
    known = [ENCODERS.index(e) if e in ENCODERS else len(ENCODERS) - 1 for e in encoders]
    return ENCODERS[max(known)]


_identities: dict[tuple[object, ...], str] = {}
_identities_lock = threading.Lock()


def model_identity(folder: str | Path, max_seq_length: int | None) -> str | None:
    """A digest of what the model computes with: every file of its folder but the stamp,
    the model card, `logs/` and hidden entries, plus the max_seq_length it encodes with.
    None when `folder` is not a local folder (a hub id). Remembered per file signature
    (name, size, mtime), so hashing ~90 MB happens once per process and model."""
    root = Path(folder)
    if not root.is_dir():
        return None
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*")
        if path.is_file() and _part_of_model(path.relative_to(root).parts)
    )
    stats = [(name, path.stat()) for name, path in files]
    signature = (
        str(root.resolve()),
        max_seq_length,
        tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats),
    )
    with _identities_lock:
        found = _identities.get(signature)
    if found is not None:
        return found
    digest = hashlib.blake2b(digest_size=16)
    for name, path in files:
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    digest.update(f"max_seq_length={max_seq_length}".encode())
    identity = "m" + digest.hexdigest()
    with _identities_lock:
        _identities[signature] = identity
    return identity


def _part_of_model(parts: tuple[str, ...]) -> bool:
    if any(part.startswith(".") for part in parts) or parts[0] == "logs":
        return False
    return not (len(parts) == 1 and parts[0] in _NOT_THE_MODEL)


class VectorCache:
    """Vectors by text hash for one model, read once and written on request.

    `encoder` names what the owner adds to the file; `read_encoder` what the file held."""

    def __init__(
        self,
        path: Path,
        dimension: int,
        *,
        encoder: str = "unknown",
        fallback: Path | None = None,
    ) -> None:
        self.path = path
        self.dimension = dimension
        self.encoder = encoder
        self.read_encoder = encoder
        self.saved_at = 0.0
        self._known: dict[int, np.ndarray] = {}
        if not self._read(path) and fallback is not None:
            self._read(fallback)

    @classmethod
    def for_model(
        cls, folder: Path, identity: str, dimension: int, *, encoder: str = "unknown"
    ) -> VectorCache:
        return cls(folder / f"{identity}.npz", dimension, encoder=encoder)

    @classmethod
    def for_version(
        cls,
        settings: Settings,
        project: str,
        number: int,
        version_id: int,
        dimension: int,
        *,
        model: str | None = None,
        max_seq_length: int | None = None,
        encoder: str = "unknown",
    ) -> VectorCache | None:
        """The file of the version's model (`model`: its local folder), shared with the
        training jobs that evaluated it; without a folder, the per-version file."""
        folder = project_index_folder(settings, project)
        legacy = folder / f"v{number}-{version_id}.npz"
        identity = model_identity(model, max_seq_length) if model else None
        if identity is None:
            return cls(legacy, dimension, encoder=encoder)
        return cls(folder / f"{identity}.npz", dimension, encoder=encoder, fallback=legacy)

    def __len__(self) -> int:
        return len(self._known)

    def lookup(self, keys: Sequence[int]) -> list[np.ndarray | None]:
        return [self._known.get(key) for key in keys]

    def forget(self) -> None:
        """Drop what was read: after the build it would only hold memory."""
        self._known = {}

    def start_over(self) -> None:
        """Use nothing that was read (vectors of an encoder the owner does not accept):
        the next write holds only the owner's own vectors, labelled as theirs."""
        self._known = {}
        self.read_encoder = self.encoder

    def save(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the file with these vectors (what serving holds now, read or embedded)."""
        self._write(keys, vectors, least_exact(self.read_encoder, self.encoder))

    def add(self, keys: Sequence[int], vectors: np.ndarray) -> None:
        """Write what was read plus these vectors (a job adds its encodes, keeping items
        serving has and the job's snapshot may not)."""
        merged = dict(self._known)
        merged.update(zip(keys, vectors, strict=True))
        self._known = merged
        order = np.fromiter(merged, dtype=np.int64, count=len(merged))
        stacked = np.stack(list(merged.values())) if merged else np.zeros((0, self.dimension))
        self._write(order, stacked, least_exact(self.read_encoder, self.encoder))

    def _write(self, keys: np.ndarray, vectors: np.ndarray, encoder: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(
            scratch,
            keys=keys.astype(np.int64),
            vectors=vectors.astype(np.float32),
            encoder=np.array(encoder),
        )
        scratch.replace(self.path)
        self.read_encoder = encoder
        self.saved_at = time.monotonic()

    def _read(self, path: Path) -> bool:
        if not path.exists():
            return False
        try:
            with np.load(path) as data:
                keys, vectors = data["keys"], data["vectors"]
                encoder = str(data["encoder"]) if "encoder" in data.files else "unknown"
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable vector cache %s", path)
            return False
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension or len(keys) != len(vectors):
            log.warning("ignoring vector cache %s: shape %s", path, vectors.shape)
            return False
        self._known = dict(zip(keys.tolist(), vectors, strict=True))
        self.read_encoder = encoder
        return True


def project_index_folder(settings: Settings, project: str) -> Path:
    """Where a project's vector files live (serving's and jobs')."""
    return artifacts.root(settings) / project / "index"

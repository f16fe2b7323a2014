"""A model's vectors of the catalog, encoded once and shared by every step of a job.

A training job needs the same catalog encoded again and again: mining negatives with the
champion, scoring the starting model and the trained candidate on validation, evaluating
base, champion and candidate on test. `encode_corpus` returns a model's unit vectors for a
list of texts, taking those already known from the model's vector file — the one serving
keeps (serving/persist.py: one file per model identity, vectors by text hash) — and
writing back what it had to encode. So a job whose champion is being served encodes the
catalog once, for its candidate, and the candidate's file is ready when serving loads the
promoted version. An edited item has a new text hash: it is encoded again, and nothing
stale can be read. `documents_from_cache` hands the same vectors to library code that
encodes a corpus itself (`mine_hard_negatives`).

Only frozen models come here: a folder on disk, loaded and not trained since (the
trainer's own per-epoch evaluation never does). A model with a document prompt is not
cached (serving encodes without prompts), nor a snapshot outside the artifact layout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fineloop.tasks.embedding.predict import CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS
from fineloop.tasks.embedding.serving.persist import EXACT, VectorCache, model_identity, text_key
from fineloop.tasks.encode_counts import record

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BATCH_SIZE = 64
ENCODER = "torch-fp32"  # what the job's models encode with


def vectors_folder(snapshot: Path) -> Path | None:
    """The project's vector folder (`<root>/<project>/index`, serving's) for a snapshot
    in the artifact layout (`<root>/<project>/snapshots/<id>`); None for any other."""
    snapshot = Path(snapshot)
    if snapshot.parent.name != "snapshots":
        return None
    return snapshot.parent.parent / "index"


def cache_identity(model: SentenceTransformer, model_path: str | Path | None) -> str | None:
    """The identity of a frozen model loaded from `model_path` (None: not cacheable)."""
    if model_path is None or model.prompts.get("document") or model.default_prompt_name:
        return None
    return model_identity(model_path, model.get_max_seq_length())


def encode_corpus(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    model_path: str | Path | None,
    folder: Path | None,
    phase: str,
) -> np.ndarray:
    """Unit float32 vectors of `texts` (in order) by `model`, loaded from `model_path` and
    not changed since; each distinct text not in the model's file is encoded once."""
    started = time.perf_counter()
    unique = list(dict.fromkeys(texts))
    cache = _cache(model, model_path, folder)
    known: dict[str, np.ndarray] = {}
    if cache is not None:
        if cache.read_encoder in EXACT:
            found = cache.lookup([text_key(text) for text in unique])
            known = {t: v for t, v in zip(unique, found, strict=True) if v is not None}
        else:
            cache.start_over()
    missing = [text for text in unique if text not in known]
    if missing:
        fresh = encode_texts(model, missing)
        known.update(zip(missing, fresh, strict=True))
        if cache is not None:
            cache.add([text_key(text) for text in missing], fresh)
    seconds = time.perf_counter() - started
    record(phase, encoded=len(missing), reused=len(unique) - len(missing), seconds=seconds)
    dimension = model.get_embedding_dimension() or 0
    if not texts:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.stack([known[text] for text in texts]).astype(np.float32, copy=False)


def keep(
    model: SentenceTransformer,
    model_path: str | Path,
    folder: Path | None,
    texts: Sequence[str],
    vectors: np.ndarray,
) -> bool:
    """Add vectors computed elsewhere for this frozen model (the trainer's evaluation of
    the checkpoint that was saved) to its file. Callers check them first (see train.py)."""
    cache = _cache(model, model_path, folder)
    if cache is None:
        return False
    if cache.read_encoder not in EXACT:
        cache.start_over()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cache.add([text_key(text) for text in texts], unit.astype(np.float32))
    return True


@contextmanager
def documents_from_cache(
    model: SentenceTransformer, *, model_path: str | Path | None, folder: Path | None, phase: str
) -> Iterator[None]:
    """`model.encode_document` answered by `encode_corpus` while inside: for library code
    that encodes the corpus itself. Its vectors are unit length whatever it asks."""

    def encode_document(sentences: Sequence[str], **kwargs: Any) -> Any:
        vectors = encode_corpus(
            model, list(sentences), model_path=model_path, folder=folder, phase=phase
        )
        if kwargs.get("convert_to_tensor"):
            import torch

            return torch.from_numpy(vectors)
        return vectors

    # an instance attribute shadows the class's method while inside
    model.encode_document = encode_document  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        delattr(model, "encode_document")


def _cache(
    model: SentenceTransformer, model_path: str | Path | None, folder: Path | None
) -> VectorCache | None:
    identity = cache_identity(model, model_path) if folder is not None else None
    dimension = model.get_embedding_dimension()
    if identity is None or folder is None or dimension is None:
        return None
    return VectorCache.for_model(folder, identity, int(dimension), encoder=ENCODER)


def encode_texts(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    """What serving's predictor computes: texts cut to what the model reads, unit rows."""
    import torch

    cap = CHARS_PER_TOKEN * (model.get_max_seq_length() or DEFAULT_MAX_TOKENS)
    with torch.inference_mode():
        # the class's method: `documents_from_cache` may shadow the instance's
        vectors = type(model).encode_document(
            model,
            [text[:cap] for text in texts],
            batch_size=BATCH_SIZE,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)

"""`OnnxEncoder`: a sentence-transformers model's forward pass on ONNX Runtime.

Why: search time is mostly query encoding (79% of a request in a py-spy profile), and on
2 CPU cores torch encodes one MiniLM query in about 17 ms where ONNX Runtime takes 5.6 ms
for the same vector (cosine 0.9999999; see `bench/search_latency.py`).

The whole module pipeline (transformer, pooling, any dense layer, normalize) is traced
into one graph by torch's TorchScript exporter, so any model the tracer can follow works,
not only the ones an export library knows. The graph is cached under `cache_root` by the
model folder's content, so a version is exported once per machine, not per load. Texts are
turned into tensors by the model's own `preprocess`, so truncation and special tokens are
the model's. Whether the graph may serve is not decided here: the caller compares it with
torch on a probe batch first (`EmbeddingPredictor.choose_encoder`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

FORMAT = "fineloop-onnx-1"  # part of the cache key: bump when the exported graph changes
OPSET = 17
KEEP_GRAPHS = 8
_PROBE_TEXT = "an example sentence to trace the model with"


class OnnxEncoder:
    """Unit-length float32 embeddings from an exported graph; not thread-safe on its own
    (the model's tokenizer is shared with torch): callers hold their lock."""

    def __init__(self, model: SentenceTransformer, graph: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning: see fineloop.threads for what spinning
        # costs on a CPU the server shares with its clients
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [entry.name for entry in self._session.get_inputs()]
        self._model = model
        self.graph = graph

    @classmethod
    def export(
        cls, model: SentenceTransformer, model_dir: str, cache_root: Path, threads: int | None
    ) -> OnnxEncoder:
        """The encoder for the model in `model_dir`, exporting its graph unless cached."""
        graph = cache_root / content_key(Path(model_dir)) / "model.onnx"
        if graph.exists():
            graph.touch()  # recently used: kept by `prune`
        else:
            graph.parent.mkdir(parents=True, exist_ok=True)
            export_graph(model, graph)
            prune(cache_root)
        return cls(model, graph, threads)

    @property
    def threads(self) -> int:
        """The intra-op pool size the session was made with (0: one per physical core)."""
        return int(self._session.get_session_options().intra_op_num_threads)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(text) for text in texts], kind="stable")  # less padding
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            features = self._model.preprocess(batch)
            feed = {name: features[name].cpu().numpy().astype(np.int64) for name in self._inputs}
            parts.append(self._session.run(None, feed)[0])
        stacked = np.concatenate(parts).astype(np.float32, copy=False)
        out = np.empty_like(stacked)
        out[order] = stacked
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def prune(cache_root: Path, keep: int | None = None) -> None:
    """Delete all but the `keep` most recently used graphs: every trained version would
    otherwise leave one behind (90 MB for MiniLM). A deleted one is exported again if
    its version is loaded again."""
    folders = [p for p in cache_root.iterdir() if (p / "model.onnx").exists()]
    folders.sort(key=lambda p: (p / "model.onnx").stat().st_mtime, reverse=True)
    for stale in folders[KEEP_GRAPHS if keep is None else keep :]:
        shutil.rmtree(stale, ignore_errors=True)


def content_key(model_dir: Path) -> str:
    """A digest of every file of the model folder (name and bytes), the torch version and
    the export format: the same model exported by another torch is another graph."""
    import torch

    digest = hashlib.sha256(f"{FORMAT}\0{torch.__version__}\0".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def export_graph(model: SentenceTransformer, graph: Path) -> None:
    """Trace the model's forward pass into `graph`, written whole or not at all."""
    import torch

    features = model.preprocess([_PROBE_TEXT, _PROBE_TEXT + " and a longer second one"])
    names = [name for name, value in features.items() if isinstance(value, torch.Tensor)]
    inputs = tuple(features[name].to(model.device) for name in names)
    dynamic = {name: {0: "batch", 1: "tokens"} for name in names}
    pipeline = _traceable(model, names).eval()
    handle, name = tempfile.mkstemp(dir=graph.parent, suffix=".onnx.part")
    os.close(handle)
    scratch = Path(name)
    try:
        # the tracer warns about every branch it fixes; the probe batch is what checks them
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                pipeline,
                inputs,
                str(scratch),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={**dynamic, "sentence_embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        scratch.chmod(0o644)  # mkstemp made it private; other processes read it
        scratch.replace(graph)
    finally:
        scratch.unlink(missing_ok=True)


def _traceable(model: SentenceTransformer, names: list[str]) -> Any:
    """The model as positional tensors in, sentence embedding out (what the tracer needs)."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, inputs, strict=True))
            embedded: torch.Tensor = self.model(features)["sentence_embedding"]
            return embedded

    return Pipeline()

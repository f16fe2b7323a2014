"""The model a NER run trains: the base with a head for the project's tags.

A base that already is a token classifier with exactly these tags (the champion of an
earlier run) keeps its head and goes on learning. Any other base gets a fresh head:
a sentence encoder or plain BERT has none, and a NER model with other tags has a head
whose outputs mean something else (re-initialised even when its size happens to match).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

HEAD_NAMES = ("classifier", "score")  # what token-classification models call their head


def tags_of(config: Any) -> list[str]:
    """The tag names a model config's head outputs, in order ([] without names)."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(int(k) for k in id2label)]


def is_token_classifier(config: Any) -> bool:
    return any(str(a).endswith("ForTokenClassification") for a in config.architectures or [])


def load_model(base: str, tags: list[str], log: Callable[[str], None]) -> tuple[Any, bool]:
    """The model to train and whether its head was kept."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(base)
    classifier = is_token_classifier(config)
    if classifier and tags_of(config) == tags:
        log("the base is a NER model with the same tags: continuing it, head kept")
        return AutoModelForTokenClassification.from_pretrained(base), True
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)},
        ignore_mismatched_sizes=True,
    )
    if classifier:
        reset_head(model)
        log(f"the base is a NER model with other tags ({', '.join(tags_of(config))}): new head")
    else:
        log(f"new token-classification head for {len(tags)} tags")
    return model, False


def head_name(model: Any) -> str:
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise ValueError(f"{type(model).__name__} has no classifier head named {HEAD_NAMES}")


def reset_head(model: Any) -> None:
    """Fresh weights for the head's linear layers (the library's usual initialisation)."""
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        for module in getattr(model, head_name(model)).modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()


def window_length(tokenizer: Any, model: Any, wanted: int) -> int:
    """Tokens per window: what the config asks, capped by what the model can take."""
    limits = [wanted]
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 1_000_000:
        limits.append(declared)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models reserve the first positions for padding.
        limits.append(
            positions - (2 if model.config.model_type in {"roberta", "xlm-roberta"} else 0)
        )
    return max(8, min(limits))


def add_lora(model: Any, r: int, alpha: int, dropout: float) -> Any:
    """The model wrapped with a LoRA adapter; the head trains fully (modules_to_save)."""
    from peft import LoraConfig, get_peft_model

    head = head_name(model)

    def config(targets: Any) -> Any:
        return LoraConfig(
            task_type="TOKEN_CLS",
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            modules_to_save=[head],
        )

    try:  # PEFT's usual targets for known architectures (BERT: query, value)
        return get_peft_model(model, config(None))
    except ValueError:
        return get_peft_model(model, config("all-linear"))


def merged(model: Any) -> Any:
    """A plain model: the adapter folded into the weights, when there is one."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model

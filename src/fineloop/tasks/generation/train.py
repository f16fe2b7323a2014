"""Fine-tune a causal LM with a LoRA adapter on a snapshot: load → trainers → save.

TRL's `SFTTrainer`, `DPOTrainer` and `KTOTrainer` do the work, one stage after the other
on one adapter. A fresh run hands the first trainer a PEFT `LoraConfig`; a run from an
adapter folder (the champion) continues that adapter on its own base. DPO and KTO on a PEFT
model need no separate reference model: TRL uses the adapter's state before the stage.

The result is always an adapter folder: PEFT's files, `fineloop_adapter.json` naming the
base, `replay/` (see `train_rows`) and `fineloop_training.json` saying what ran.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from datasets import Dataset  # type: ignore[import-untyped]
from pydantic import BaseModel
from transformers.trainer_callback import PrinterCallback

from fineloop.errors import Invalid
from fineloop.runtime import device, is_main_process, supports_bf16
from fineloop.tasks.base import JobCancelled, ProgressSink
from fineloop.tasks.generation.config import GenerationTrainConfig, as_config
from fineloop.tasks.generation.models import (
    load_causal_lm,
    load_tokenizer,
    split_model,
)
from fineloop.tasks.generation.train_callback import StageCallback
from fineloop.tasks.generation.train_rows import (
    choose_methods,
    kto_weights,
    mix,
    read_replay,
    read_train,
)
from fineloop.tasks.generation.train_save import RECORD, save, stamp, summary

__all__ = ["RECORD", "train"]  # RECORD: where a run says what it did (the web reads it)


def train(
    snapshot: Path,
    base_model: str,
    config: BaseModel,
    out_dir: Path,
    sink: ProgressSink,
) -> Path:
    settings = as_config(config)
    out_dir = Path(out_dir)
    base, adapter = split_model(base_model)
    rows = read_train(snapshot)
    methods = choose_methods(settings.method, {m: len(d) for m, d in rows.items()})
    old_replay = read_replay(adapter)
    bf16, qlora = resolve_bf16(settings), resolve_qlora(settings)
    sink.log(
        f"training {' then '.join(methods)} on {base}"
        + (f", continuing adapter {adapter}" if adapter else ", new LoRA adapter")
        + f" ({'bf16' if bf16 else 'fp32'}{', 4-bit base' if qlora else ''})"
    )
    tokenizer = load_tokenizer(base)
    if not tokenizer.chat_template:
        raise Invalid(
            f"the tokenizer of {base!r} has no chat template: use a chat (instruct) base "
            "model, or add a chat_template to its tokenizer_config.json",
            field="base_model",
        )
    model, lora = load_trainable(base, adapter, settings, bf16=bf16, qlora=qlora)
    callback = StageCallback(sink, methods)
    work = out_dir / ".work"
    record: dict[str, Any] = {"methods": methods, "rows": {}, "replay_rows": {}, "metrics": {}}
    try:
        offset = 0
        for index, method in enumerate(methods):
            if sink.cancelled():
                raise JobCancelled("training was cancelled")
            data, replayed = mix(
                rows[method], old_replay.get(method), settings.replay_share, settings.seed
            )
            record["rows"][method], record["replay_rows"][method] = len(rows[method]), replayed
            sink.log(f"{method}: {len(rows[method])} rows + {replayed} replayed")
            callback.begin(index, offset)
            trainer = make_trainer(
                method,
                model,
                lora,
                tokenizer,
                data,
                settings,
                work / method,
                bf16,
                callback,
                out_dir / "logs",
            )
            if method == "kto":  # what TRL was given, and the label counts behind it
                record["kto_weights"] = kto_weights(list(data["label"]))
            trainer.train()
            if callback.cancelled:
                raise JobCancelled("training was cancelled")
            model, lora = trainer.model, None  # the next stage goes on with this adapter
            drop_reference(model)
            offset += trainer.state.global_step
            record["metrics"][method] = summary(trainer.state.log_history)
        if is_main_process():
            record.update(stamp(snapshot, base, adapter, settings, bf16=bf16, qlora=qlora))
            save(model, out_dir, work, base, rows, methods, old_replay, settings, record)
    finally:
        if is_main_process():  # other ranks may not remove what rank 0 is still writing
            shutil.rmtree(work, ignore_errors=True)
    sink.log(f"trained {', '.join(methods)}: {json.dumps(record['metrics'], sort_keys=True)}")
    sink.progress(1.0, "saved")
    return out_dir


def resolve_bf16(config: GenerationTrainConfig) -> bool:
    return supports_bf16() if config.bf16 == "auto" else config.bf16


def resolve_qlora(config: GenerationTrainConfig) -> bool:
    available = device() == "cuda" and importlib.util.find_spec("bitsandbytes") is not None
    if config.qlora == "auto":
        return available
    if config.qlora and not available:
        raise Invalid(
            "qlora needs a CUDA GPU and the bitsandbytes package; set qlora to auto or false",
            field="train.qlora",
        )
    return config.qlora


def load_trainable(
    base: str, adapter: str | None, config: GenerationTrainConfig, *, bf16: bool, qlora: bool
) -> tuple[Any, Any]:
    """The model to train and the `LoraConfig` for its first trainer (None when the model
    already carries the adapter to continue)."""
    import torch
    from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training

    gpu = device() == "cuda"
    dtype = torch.bfloat16 if gpu and bf16 else torch.float32  # CPU: fp32 weights, autocast
    extra: dict[str, Any] = {}
    if qlora:
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
        )
        extra["device_map"] = {"": 0}
    model = load_causal_lm(base, dtype=dtype, **extra)
    if qlora:
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=checkpointing(config)
        )
    if adapter is not None:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True), None
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return model, lora


def checkpointing(config: GenerationTrainConfig) -> bool:
    auto = device() == "cuda"
    return auto if config.gradient_checkpointing == "auto" else config.gradient_checkpointing


def common_args(config: GenerationTrainConfig, output: Path, bf16: bool) -> dict[str, Any]:
    """The TrainingArguments every stage shares: no checkpoints, no evaluation (the gate
    evaluates the saved adapter), logs to the sink."""
    reporters = [name for name in config.report_to if name != "tensorboard"]  # see below
    return {
        "output_dir": str(output),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "bf16": bf16,
        "use_cpu": device() == "cpu",
        "gradient_checkpointing": checkpointing(config),
        "seed": config.seed,
        "data_seed": config.seed,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "report_to": reporters or "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
    }


def make_trainer(
    method: str,
    model: Any,
    lora: Any,
    tokenizer: Any,
    data: Dataset,
    config: GenerationTrainConfig,
    output: Path,
    bf16: bool,
    callback: StageCallback,
    logs: Path,
) -> Any:
    """The TRL trainer for one stage."""
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.kto_config import KTOConfig
    from trl.trainer.kto_trainer import KTOTrainer
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    args = common_args(config, output, bf16)
    shared = {
        "model": model,
        "processing_class": tokenizer,
        "train_dataset": data,
        "peft_config": lora,
        "callbacks": [callback],
    }
    trainer: Any
    if method == "sft":
        trainer = SFTTrainer(args=SFTConfig(**args), **shared)
    elif method == "dpo":
        trainer = DPOTrainer(args=DPOConfig(**args, beta=config.dpo_beta), **shared)
    else:
        weights = kto_weights(list(data["label"]))
        trainer = KTOTrainer(
            args=KTOConfig(
                **args,
                beta=config.kto_beta,
                desirable_weight=weights["desirable_weight"],
                undesirable_weight=weights["undesirable_weight"],
            ),
            **shared,
        )
    trainer.remove_callback(PrinterCallback)  # progress goes to the sink, not stdout
    if "tensorboard" in config.report_to:
        trainer.add_callback(tensorboard_callback(logs / method))
    return trainer


def tensorboard_callback(folder: Path) -> Any:
    """transformers' TensorBoard callback writing to `folder`: the job's folder rather than
    the trainer's output folder, which is deleted once the adapter is saved."""
    from transformers.integrations.integration_utils import TensorBoardCallback

    callback = TensorBoardCallback()  # type: ignore[no-untyped-call]
    callback.logging_dir = str(folder)
    return callback


def drop_reference(model: Any) -> None:
    """Remove the frozen "ref" copy TRL adds to a PEFT model it continues, so the next
    stage and the saved folder see one adapter."""
    if "ref" in getattr(model, "peft_config", {}):
        model.set_adapter("default")
        model.delete_adapter("ref")

"""Reports a training stage to a `ProgressSink` and stops it on cancel.

One callback spans every stage of a run (sft, then dpo, ...): progress is the share of the
stages done, and metric steps keep increasing across stages, so a chart of the whole run
reads left to right. It does O(1) work per step, as the embedding family's does.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from fineloop.tasks.base import ProgressSink, stop_if_cancelled

# What TRL logs that is worth a chart: the loss everywhere; DPO/KTO reward margins and
# accuracies (how often the chosen reply beats the rejected one), KTO's KL estimate.
REPORTED = ("loss", "rewards/margins", "rewards/accuracies", "kl")


class StageCallback(TrainerCallback):
    """Forwards progress and TRL's training logs to the sink; stops on cancel."""

    def __init__(self, sink: ProgressSink, stages: list[str]) -> None:
        self.sink = sink
        self.stages = stages
        self.index = 0
        self.offset = 0  # steps of the stages done, so metric steps keep increasing
        self.cancelled = False

    def begin(self, index: int, offset: int) -> None:
        self.index, self.offset = index, offset

    @property
    def stage(self) -> str:
        return self.stages[self.index]

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        total = max(state.max_steps, 1)
        done = (self.index + min(state.global_step / total, 1.0)) / len(self.stages)
        self.sink.progress(done, f"{self.stage}: step {state.global_step}/{total}")
        if stop_if_cancelled(self.sink, control):
            self.cancelled = True

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return
        step = self.offset + state.global_step
        for name in REPORTED:
            if isinstance(logs.get(name), int | float):
                self.sink.metric(name, step, float(logs[name]))
        extra = "".join(f", {name} {logs[name]:.4f}" for name in REPORTED[1:] if name in logs)
        self.sink.log(
            f"{self.stage} step {state.global_step}/{state.max_steps}: "
            f"loss {logs['loss']:.4f}{extra}"
        )

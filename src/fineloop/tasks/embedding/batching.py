"""batch_size "auto": the largest batch whose training step fits a memory budget.

The search tries powers of two from `auto_batch_min` up to the largest one that is at
most `auto_batch_max` and the number of train rows. Each size is measured by one real
probe step (forward and backward of the configured loss on the longest rows, in fp32, a
conservative stand-in for bf16 autocast) on the starting model; the weights are not
changed (no optimizer step; gradients are dropped, RNG state restored). A step needs:

    measured peak of the probe over the memory in use before it
    + the AdamW state the real run adds (two fp32 values per trainable parameter)

How the peak is measured:
- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus the
  memory allocated before.
- CPU: the process's peak resident set (VmHWM in /proc/self/status), reset before each
  probe by writing 5 to /proc/self/clear_refs, minus the resident set before the probe
  (freed heap is first handed back with glibc's malloc_trim, so a probe cannot hide in
  memory an earlier one freed). Where the peak cannot be reset, `ru_maxrss` is used: it
  only grows, so a probe smaller than an earlier peak reads as zero — an underestimate,
  logged as such.

Before a probe runs, its need is predicted linearly from the two sizes measured last
(activations grow with the batch); a size predicted above the budget is not run, so the
search never allocates much past the budget. The first size over the budget ends the
search. When that stopped an mnrl search below the largest size, a bigger batch is still
wanted (in-batch negatives): the largest size is probed with cached_mnrl in mini-batches
of the size that fit (then each smaller candidate), and the first that fits is taken. So
a smaller budget never gives a larger batch in memory at once (the mini-batch, or the
batch without the switch).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fineloop.errors import Invalid
from fineloop.runtime import device

if TYPE_CHECKING:
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    from fineloop.tasks.embedding.config import EmbeddingTrainConfig

MB = 1024 * 1024
CPU_SHARE = 0.5  # of the available RAM, when no budget is given
CUDA_SHARE = 0.9  # of the free device memory
SWITCHABLE = {"mnrl": "cached_mnrl"}  # a loss and its gradient-cached twin

# (loss name, batch size, cached mini-batch size or None) -> MB one step needs
Need = Callable[[str, int, "int | None"], float]


@dataclass
class Plan:
    """What auto chose, and the measurements behind it (for the log and the stamp)."""

    batch_size: int
    loss: str
    cached_mini_batch_size: int | None
    budget_mb: float
    needs_mb: dict[str, float] = field(default_factory=dict)  # "mnrl@16" -> MB
    skipped: dict[str, float] = field(default_factory=dict)  # predicted over budget, not run
    method: str = ""

    def stamp(self) -> dict[str, Any]:
        return {
            "requested": "auto",
            "batch_size": self.batch_size,
            "loss": self.loss,
            "cached_mini_batch_size": self.cached_mini_batch_size,
            "memory_budget_mb": round(self.budget_mb, 1),
            "needs_mb": {k: round(v, 3) for k, v in self.needs_mb.items()},
            "predicted_over_budget_mb": {k: round(v, 3) for k, v in self.skipped.items()},
            "method": self.method,
        }

    def message(self) -> str:
        switched = (
            f", {self.loss} in mini-batches of {self.cached_mini_batch_size}"
            if self.cached_mini_batch_size
            else ""
        )
        return (
            f"batch_size auto: {self.batch_size}{switched} (budget {self.budget_mb:,.0f} MB, "
            f"measured {', '.join(f'{k} {v:.1f} MB' for k, v in self.needs_mb.items())})"
        )


def sizes(low: int, high: int, rows: int) -> list[int]:
    """Powers of two from `low` (rounded up) to min(`high`, `rows`); at least one size."""
    top = min(high, rows)
    size = 1
    while size < low:
        size *= 2
    found = []
    while size <= top:
        found.append(size)
        size *= 2
    if not found:  # fewer rows than the smallest size: the largest power of two that fits
        size = 1
        while size * 2 <= max(rows, 2):
            size *= 2
        found = [max(size, 2)]
    return found


def choose(candidates: list[int], loss: str, budget: float, need: Need) -> Plan:
    """The largest candidate whose step fits `budget`, stopping at the first that does not
    (or is predicted not to); then, for a switchable loss stopped by memory, its cached
    twin at the largest candidate in mini-batches of the size that fit."""
    plan = Plan(0, loss, None, budget)
    measured: list[tuple[int, float]] = []
    for size in candidates:
        key = f"{loss}@{size}"
        if len(measured) >= 2:
            (a, need_a), (b, need_b) = measured[-2:]
            predicted = need_b + max((need_b - need_a) / (b - a), 0.0) * (size - b)
            if predicted > budget:
                plan.skipped[key] = predicted
                break
        plan.needs_mb[key] = needed = need(loss, size, None)
        if needed > budget:
            break
        measured.append((size, needed))
        plan.batch_size = size
    if plan.batch_size == 0:
        first = candidates[0]
        raise Invalid(
            f"memory_budget_mb {budget:,.3f} is below what one training step at batch size "
            f"{first} needs ({plan.needs_mb[f'{loss}@{first}']:,.3f} MB): raise the budget "
            "or lower auto_batch_min",
            field="train.memory_budget_mb",
        )
    largest = candidates[-1]
    twin = SWITCHABLE.get(loss)
    if twin is None or plan.batch_size == largest:
        return plan
    for mini in reversed([size for size in candidates if size <= plan.batch_size]):
        key = f"{twin}@{largest}/{mini}"
        plan.needs_mb[key] = needed = need(twin, largest, mini)
        if needed <= budget:
            plan.loss, plan.cached_mini_batch_size, plan.batch_size = twin, mini, largest
            break
    return plan


def default_budget_mb() -> float:
    """90% of the free CUDA memory, or half the available RAM (psutil, else /proc/meminfo)."""
    import torch

    if device() == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return CUDA_SHARE * free / MB
    try:
        import psutil  # type: ignore[import-untyped]  # accelerate's dependency

        return CPU_SHARE * float(psutil.virtual_memory().available) / MB
    except ImportError:
        text = Path("/proc/meminfo").read_text()
        found = re.search(r"MemAvailable:\s+(\d+) kB", text)
        if found is None:
            raise Invalid(
                "cannot tell the available memory here: give memory_budget_mb",
                field="train.memory_budget_mb",
            ) from None
        return CPU_SHARE * int(found.group(1)) / 1024


class Probe:
    """Measures one training step of a loss at a batch size on the starting model."""

    def __init__(
        self, model: SentenceTransformer, rows: Dataset, config: EmbeddingTrainConfig, work: Path
    ) -> None:
        self.model = model
        self.config = config
        self.work = work
        columns = [c for c in rows.column_names if isinstance(rows[0][c], str)]
        length = [sum(len(str(row[c])) for c in columns) for row in rows]
        longest = sorted(range(len(length)), key=lambda i: (-length[i], i))
        self.rows = rows.select(longest)  # the longest first: worst-case padding
        self.trainers: dict[tuple[str, int | None], Any] = {}
        self.optimizer_mb = (
            2 * 4 * sum(p.numel() for p in model.parameters() if p.requires_grad) / MB
        )
        self.peak_resettable = _reset_peak()
        self.method = (
            "cuda max_memory_allocated"
            if device() == "cuda"
            else (
                "peak RSS (VmHWM, reset per probe)"
                if self.peak_resettable
                else "ru_maxrss (no peak reset: may underestimate)"
            )
        ) + " + AdamW state"

    def need_mb(self, loss: str, batch: int, mini: int | None) -> float:
        """MB one step of `loss` at `batch` needs (see the module's docstring)."""
        key = (loss, mini)
        if key not in self.trainers:  # a first step allocates once-only buffers: not counted
            self._step(self._trainer(loss, mini), 2, measure=False)
        return self._step(self.trainers[key], batch, measure=True) / MB + self.optimizer_mb

    def _step(self, trainer: Any, batch: int, *, measure: bool) -> int:
        import torch

        batch_rows = [self.rows[i] for i in range(min(batch, len(self.rows)))]
        with torch.random.fork_rng(devices=[]):
            inputs = trainer.data_collator(batch_rows)
            inputs = {
                k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v
                for k, v in inputs.items()
            }
            self.model.zero_grad(set_to_none=True)
            self.model.train()
            before = _start_measure() if measure else 0
            step_loss = trainer.compute_loss(self.model, inputs)
            step_loss.backward()
            peak = _peak_since(before) if measure else 0
            del step_loss, inputs
            self.model.zero_grad(set_to_none=True)
        return peak

    def _trainer(self, loss: str, mini: int | None) -> Any:
        """A trainer only for its data collator and `compute_loss` (it never trains)."""
        key = (loss, mini)
        if key not in self.trainers:
            from sentence_transformers import (
                SentenceTransformerTrainer,
                SentenceTransformerTrainingArguments,
            )

            from fineloop.tasks.embedding.losses import build_loss, get_loss

            update: dict[str, Any] = {"loss": loss, "batch_size": 2}
            if mini is not None:
                update["cached_mini_batch_size"] = mini
            config = self.config.model_copy(update=update)
            args = SentenceTransformerTrainingArguments(
                output_dir=str(self.work),
                use_cpu=device() == "cpu",
                report_to="none",
                disable_tqdm=True,
            )
            self.trainers[key] = SentenceTransformerTrainer(
                model=self.model,
                args=args,
                loss=build_loss(get_loss(loss), self.model, config),
            )
        return self.trainers[key]


def plan_batch(
    model: SentenceTransformer, rows: Dataset, config: EmbeddingTrainConfig, work: Path
) -> Plan:
    """Probe and choose (only called with batch_size auto)."""
    budget = config.memory_budget_mb or default_budget_mb()
    probe = Probe(model, rows, config, work / "batch-probe")
    candidates = sizes(config.auto_batch_min, config.auto_batch_max, len(rows))
    plan = choose(candidates, config.loss, budget, probe.need_mb)
    plan.method = probe.method
    if plan.loss == "cached_mnrl" and plan.cached_mini_batch_size is None:
        plan.cached_mini_batch_size = config.cached_mini_batch_size  # as configured
    return plan


# --- measuring ----------------------------------------------------------------------------


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: freed heap may stay
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status("VmHWM") is not None


def _status(name: str) -> int | None:
    """A /proc/self/status value in bytes."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"{name}:\s+(\d+) kB", text)
    return int(found.group(1)) * 1024 if found else None


def _start_measure() -> int:
    import torch

    if device() == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())
    _trim()
    rss = _status("VmRSS")
    if rss is not None and _reset_peak():
        return rss
    return rss or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_since(before: int) -> int:
    import torch

    if device() == "cuda":
        torch.cuda.synchronize()
        return max(int(torch.cuda.max_memory_allocated()) - before, 0)
    peak = _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(peak - before, 0)


def settle_batch(
    config: EmbeddingTrainConfig,
    rows: Dataset,
    model: SentenceTransformer,
    work: Path,
) -> tuple[EmbeddingTrainConfig, dict[str, Any], str | None]:
    """The config to fit with (a whole batch size; with auto, maybe cached_mnrl), what the
    stamp records, and the line for the job's log (None: the batch size was given)."""
    if config.batch_size != "auto":
        return config, {"requested": config.batch_size, "batch_size": config.batch_size}, None
    plan = _agree(plan_batch(model, rows, config, work))
    update: dict[str, Any] = {"batch_size": plan.batch_size, "loss": plan.loss}
    if plan.cached_mini_batch_size is not None:
        update["cached_mini_batch_size"] = plan.cached_mini_batch_size
    return config.model_copy(update=update), plan.stamp(), plan.message()


def _agree(plan: Plan) -> Plan:
    """Rank 0's plan on every rank (DDP): all ranks must step with the same batch."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return plan
    box: list[object] = [plan]
    dist.broadcast_object_list(box, src=0)
    agreed = box[0]
    assert isinstance(agreed, Plan)
    return agreed

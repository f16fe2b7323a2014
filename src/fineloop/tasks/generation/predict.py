"""`GenerationPredictor`: what serving calls to answer a chat or a prompt.

A predictor is a full causal LM or a LoRA adapter on a base; either way the base comes from
the process-wide cache in `predict_bases`, so every version of a project shares one copy
and a request only switches the active adapter. The base's lock is held from tokenizing to
the last generated token: adapter switching and fast tokenizers are not thread-safe.

The text is the model's own: greedy decoding (temperature 0) is `model.generate` with
`do_sample=False`, decoded without special tokens and cut before the first stop string.
Sampling with a seed is repeatable: torch's generator is process-wide, so sampled requests
take turns on it (`_SAMPLING`) and restore it afterwards.

Cost is bounded: `max_tokens` is capped by the request schema, by this predictor's
`max_new_tokens` and by the context; the prompt by `MAX_INPUT_CHARS` before tokenizing and
by the context (`max_position_embeddings`, at most `max_context`) after.

Precision: bf16 on a GPU that has it, float32 on a CPU (bf16 there changes greedy text, and
a 135M model is not where a CPU server spends its time).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Generator, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fineloop.errors import Invalid
from fineloop.tasks.generation import predict_bases
from fineloop.tasks.generation.models import split_model
from fineloop.tasks.generation.predict_context import FittedPrompt, fit_prompt
from fineloop.tasks.generation.predict_io import (
    ContextPolicy,
    FinishReason,
    GenerationInput,
    GenerationOutput,
)
from fineloop.tasks.generation.predict_stop import StopCutter, cut_at_stop
from fineloop.threads import limit_threads

if TYPE_CHECKING:
    from fineloop.config import Settings

MAX_CONTEXT = 8192  # prompt + reply, whatever larger context a model declares
MAX_NEW_TOKENS = 1024  # default cap on max_tokens
DEFAULT_CONTEXT = 2048  # for a model whose config declares none
STREAM_TIMEOUT_SECONDS = 600.0  # a stream waits this long for its next token, then fails
_SAMPLING = threading.Lock()


class GenerationPredictor:
    """A generation model ready to answer; `generate` and `stream` are thread-safe."""

    def __init__(
        self,
        model: str,
        *,
        context_policy: ContextPolicy = "truncate",
        max_new_tokens: int = MAX_NEW_TOKENS,
        max_context: int = MAX_CONTEXT,
    ) -> None:
        path = Path(model).expanduser()
        if (path.is_absolute() or model.startswith(".")) and not path.exists():
            raise Invalid(f"no model at {model}", field="model")
        self.model_id = model
        self.context_policy: ContextPolicy = context_policy
        self.max_new_tokens = max_new_tokens
        self.threads: int | None = None
        base, adapter = split_model(model)
        self.base = predict_bases.acquire(base, _serving_dtype())
        self.adapter: str | None = None
        try:
            if adapter is not None:
                self.adapter = self.base.attach(adapter)
        except BaseException:
            predict_bases.release(self.base)
            raise
        self._finalizer = weakref.finalize(self, _give_back, self.base, self.adapter)
        config = self.base.model.config
        declared = getattr(config, "max_position_embeddings", None) or DEFAULT_CONTEXT
        self.context = min(int(declared), max_context)

    @property
    def base_loads(self) -> int:
        """How often this predictor's base was loaded in this process (1 when shared)."""
        return predict_bases.BASE_LOADS[self.base.key]

    def close(self) -> None:
        """Give the adapter and base back now (else when garbage-collected)."""
        self._finalizer()

    def prepare_for_serving(self, settings: Settings) -> None:
        """The task contract's warm-up: the serving thread cap, then one short reply."""
        self.threads = settings.serving_threads
        self.generate(GenerationInput(prompt="Hello", max_tokens=2))

    def generate(self, request: GenerationInput) -> GenerationOutput:
        """The whole reply at once."""
        with self.base.lock:
            limit_threads(self.threads)
            fitted = self._fit(request)
            with self.base.use(self.adapter):
                new = self._run(request, fitted, streamer=None, cancel=None)
            full = str(self.base.tokenizer.decode(new, skip_special_tokens=True))
        text, stopped = cut_at_stop(full, request.stop)
        return self._output(text, new, fitted, request, stopped)

    def stream(self, request: GenerationInput) -> TextStream:
        """The reply as it is generated, in text chunks that join to `generate`'s text.
        Context errors raise here, before the first chunk; `output` is set at the end."""
        with self.base.lock:
            fitted = self._fit(request)
        return TextStream(self, request, fitted)

    def _fit(self, request: GenerationInput) -> FittedPrompt:
        return fit_prompt(
            self.base.tokenizer,
            request,
            context=self.context,
            max_new_tokens=min(request.max_tokens, self.max_new_tokens),
            policy=request.context_policy or self.context_policy,
        )

    def _run(
        self,
        request: GenerationInput,
        fitted: FittedPrompt,
        streamer: Any,
        cancel: threading.Event | None,
    ) -> list[int]:
        """Generate with the base lock held and the adapter active; the new token ids."""
        import torch

        model, tokenizer = self.base.model, self.base.tokenizer
        ids = torch.tensor([fitted.ids], dtype=torch.long, device=self.base.device)
        options: dict[str, Any] = {
            "max_new_tokens": fitted.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "streamer": streamer,
        }
        criteria = [self.base.stop_criterion(tuple(request.stop))] if request.stop else []
        if cancel is not None:
            criteria.append(_Cancelled(cancel))
        if criteria:
            options["stopping_criteria"] = _criteria(criteria)
        sampling = request.temperature > 0
        options["do_sample"] = sampling
        if sampling:
            options |= {"temperature": request.temperature, "top_p": request.top_p}
        seeded = _seeded(request.seed, self.base.device) if sampling else nullcontext()
        with _SAMPLING if sampling else nullcontext(), seeded, torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
        return [int(token) for token in out[0, ids.shape[1] :]]

    def _output(
        self,
        text: str,
        new: list[int],
        fitted: FittedPrompt,
        request: GenerationInput,
        stopped: bool,
    ) -> GenerationOutput:
        ended = bool(new) and new[-1] in _eos_ids(self.base)
        reason: FinishReason = "stop"
        if not (stopped or ended) and len(new) >= fitted.max_new_tokens:
            reason = "length"
        return GenerationOutput(
            text=text,
            finish_reason=reason,
            prompt_tokens=len(fitted.ids),
            completion_tokens=len(new),
            truncated=fitted.truncated,
        )


class TextStream:
    """An iterator of text chunks; generation runs in a thread holding the base's lock.
    Closing it early (or dropping it) stops the generation at the next token."""

    def __init__(
        self, predictor: GenerationPredictor, request: GenerationInput, fitted: FittedPrompt
    ) -> None:
        from transformers import TextIteratorStreamer

        self.output: GenerationOutput | None = None
        self._predictor, self._request, self._fitted = predictor, request, fitted
        self._streamer = TextIteratorStreamer(
            predictor.base.tokenizer,
            skip_prompt=True,
            timeout=STREAM_TIMEOUT_SECONDS,
            skip_special_tokens=True,
        )
        self._cancel = threading.Event()
        self._new: list[int] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._generate, daemon=True)
        self._chunks = self._iterate()

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def cancel(self) -> None:
        """Stop generating at the next token; what was generated still comes out."""
        self._cancel.set()

    def close(self) -> None:
        """Stop generating (a client went away); returns once the base is free again."""
        self.cancel()
        self._chunks.close()
        if self._thread.is_alive():
            self._thread.join()

    def _generate(self) -> None:
        predictor = self._predictor
        try:
            with predictor.base.lock:
                limit_threads(predictor.threads)
                with predictor.base.use(predictor.adapter):
                    self._new = predictor._run(
                        self._request, self._fitted, self._streamer, self._cancel
                    )
        except BaseException as error:  # shown to the reader, not lost in the thread
            self._error = error
            self._streamer.end()  # type: ignore[no-untyped-call]

    def _iterate(self) -> Generator[str, None, None]:
        cutter = StopCutter(self._request.stop)
        shown: list[str] = []
        self._thread.start()
        try:
            for chunk in self._streamer:
                piece = cutter.feed(chunk)
                if piece:
                    shown.append(piece)
                    yield piece
                if cutter.stopped:
                    self._cancel.set()
                    break
            tail = cutter.finish()
            if tail:
                shown.append(tail)
                yield tail
        finally:
            self._cancel.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.output = self._predictor._output(
            "".join(shown), self._new, self._fitted, self._request, cutter.stopped
        )


def _give_back(base: predict_bases.SharedBase, adapter: str | None) -> None:
    if adapter is not None:
        base.retire(adapter)
    predict_bases.release(base)


def _eos_ids(base: predict_bases.SharedBase) -> set[int]:
    found: set[int] = set()
    for source in (base.model.generation_config.eos_token_id, base.tokenizer.eos_token_id):
        if isinstance(source, int):
            found.add(source)
        elif isinstance(source, list):
            found.update(int(token) for token in source)
    return found


def _criteria(criteria: list[Any]) -> Any:
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList(criteria)


class _Cancelled:
    """A stopping criterion: stop once the event is set (duck-typed, so this module does
    not import transformers)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


@contextmanager
def _seeded(seed: int | None, device: Any) -> Iterator[None]:
    """torch's generator seeded for one request (a fresh seed without one), then restored."""
    import torch

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is None:
            torch.seed()
        else:
            torch.manual_seed(seed)
        yield


def _serving_dtype() -> Any:
    import torch

    from fineloop.runtime import bf16_supported, device

    where = device()
    return torch.bfloat16 if where == "cuda" and bf16_supported(where) else torch.float32

"""One base model per process, shared by every predictor built on it.

A project's versions are mostly LoRA adapters on one base, so serving the champion, a
challenger and the bare base must not hold three copies of it. `acquire(base)` returns
the process-wide `SharedBase` for that base (loading it on first use; `BASE_LOADS` counts
loads per base), and `SharedBase.attach(adapter)` loads each adapter folder onto it once,
under its own PEFT adapter name. A request activates its adapter (`set_adapter`) or turns
adapters off (`disable_adapter()`) for the bare base: switching never reloads the base.

Adapter switching is not thread-safe, so `SharedBase.lock` serializes everything that
touches the model and its tokenizer. A predictor that is closed or garbage-collected gives
its adapter and base back: an adapter nobody uses is deleted at the next use of the base
(never from inside a garbage collection, which may run while the lock is held), and a base
nobody uses leaves the cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fineloop.errors import Invalid
from fineloop.tasks.generation.models import load_causal_lm, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STOP_CACHE_SIZE = 64  # stop-string sets remembered per base
BASE_LOADS: Counter[str] = Counter()  # base key -> times loaded in this process
_BASES: dict[str, SharedBase] = {}
_REGISTRY = threading.RLock()  # re-entrant: a finalizer may run in a thread that holds it


def base_key(base: str) -> str:
    """The cache key of a base: its real path for a local folder, else the hub id."""
    return os.path.realpath(base) if Path(base).exists() else base


class SharedBase:
    """A base model, its tokenizer, the adapters loaded onto it and the lock to use it."""

    def __init__(self, key: str, model: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        self.key = key
        self.model = model  # a PreTrainedModel, a PeftModel once an adapter is attached
        self.tokenizer = tokenizer
        self.lock = threading.Lock()
        self.users = 0
        self.adapters: Counter[str] = Counter()  # adapter name -> predictors using it
        self._retired: list[str] = []
        self._stops: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def attach(self, adapter: str) -> str:
        """Load the adapter folder onto this base once; its name for `use`."""
        name = adapter_name(adapter)
        with self.lock:
            with _REGISTRY:
                needed = self.adapters[name] == 0 and name not in self._loaded()
            if needed:
                self._load_adapter(adapter, name)
            with _REGISTRY:
                self.adapters[name] += 1
        return name

    def use(self, adapter_name: str | None) -> AbstractContextManager[Any]:
        """With the lock held: make `adapter_name` (None: the bare base) the active one."""
        self._delete_retired()
        if adapter_name is not None:
            self.model.set_adapter(adapter_name)
            return nullcontext()
        if hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()  # type: ignore[no-any-return]
        return nullcontext()

    def stop_criterion(self, stops: tuple[str, ...]) -> Any:
        """transformers' `StopStringCriteria` for these stop strings, built once (with the
        lock held): building it reads the whole vocabulary, ~0.1-0.2 s for SmolLM2's."""
        criterion = self._stops.get(stops)
        if criterion is None:
            from transformers import StopStringCriteria

            criterion = StopStringCriteria(self.tokenizer, list(stops))
            self._stops[stops] = criterion
            if len(self._stops) > STOP_CACHE_SIZE:
                self._stops.popitem(last=False)
        else:
            self._stops.move_to_end(stops)
        return criterion

    def retire(self, adapter_name: str) -> None:
        """A predictor no longer uses the adapter; it is deleted at the next `use`."""
        with _REGISTRY:
            self.adapters[adapter_name] -= 1
            if self.adapters[adapter_name] <= 0:
                del self.adapters[adapter_name]
                self._retired.append(adapter_name)

    def _loaded(self) -> set[str]:
        return set(getattr(self.model, "peft_config", {}) or {})

    def _load_adapter(self, adapter: str, name: str) -> None:
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(adapter, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, adapter, adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise Invalid(f"cannot load adapter {adapter}: {error}", field="model") from None
        self.model.eval()

    def _delete_retired(self) -> None:
        with _REGISTRY:
            retired, self._retired = self._retired, []
            unused = [name for name in retired if name not in self.adapters]
        for name in unused:
            loaded = self._loaded()
            if name in loaded and len(loaded) > 1:  # PEFT keeps at least one adapter
                if self.model.active_adapter == name:  # `use` activates its own next
                    self.model.set_adapter(next(iter(loaded - {name})))
                self.model.delete_adapter(name)


def adapter_name(adapter: str) -> str:
    """A PEFT adapter name for a folder: its path and weights' size and time, so a folder
    rewritten in place is loaded again rather than served stale."""
    weights = Path(adapter) / "adapter_model.safetensors"
    stat = weights.stat()
    seed = f"{os.path.realpath(adapter)}|{stat.st_size}|{stat.st_mtime_ns}"
    return "a" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def acquire(base: str, dtype: Any) -> SharedBase:
    """The shared base for `base`, loaded here on first use."""
    key = base_key(base)
    with _REGISTRY:
        shared = _BASES.get(key)
        if shared is None:
            shared = _load(base, key, dtype)
            _BASES[key] = shared
        shared.users += 1
        return shared


def release(shared: SharedBase) -> None:
    """A predictor is done with `shared`; the last one out drops it from the cache."""
    with _REGISTRY:
        shared.users -= 1
        if shared.users <= 0 and _BASES.get(shared.key) is shared:
            del _BASES[shared.key]


def _load(base: str, key: str, dtype: Any) -> SharedBase:
    from fineloop.runtime import device

    model: Any = load_causal_lm(base, dtype=dtype)  # first: it refuses pickled weights
    tokenizer = load_tokenizer(base)
    model.to(device())
    model.eval()
    BASE_LOADS[key] += 1
    return SharedBase(key, model, tokenizer)


@contextmanager
def loaded_bases() -> Iterator[dict[str, SharedBase]]:
    """The cache as it is (for tests and benchmarks that look inside)."""
    with _REGISTRY:
        yield dict(_BASES)

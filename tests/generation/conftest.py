"""The tiny Llama, built once per test session (tests that change it copy it first), and
snapshots in the generation layout written by hand with the real `save_splits`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Rows = dict[str, list[dict[str, Any]]]
SnapshotWriter = Callable[..., Path]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tiny models' matmuls take microseconds: a second OpenMP thread only adds
    synchronisation, which costs up to 30x when other processes share the 2 cores (measured:
    an evaluation 0.36 s with one thread, 10.6 s with two under load). Restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def features(method: str) -> dict[str, Any]:
    """The convention's columns for one method's split folder."""
    from datasets import List, Value  # type: ignore[import-untyped]

    message = List({"role": Value("string"), "content": Value("string")})
    columns: dict[str, Any] = {
        "prompt": message,
        "prompt_key": Value("string"),
        "feedback_ids": List(Value("int64")),
    }
    if method == "dpo":
        columns |= {"chosen": message, "rejected": message}
    else:
        columns["completion"] = message
    if method == "kto":
        columns["label"] = Value("bool")
    return columns


def write_snapshot(out: Path, rows: Rows, **meta: Any) -> Path:
    """sft/, dpo/, kto/ (each with every split) and snapshot.json, as `build` writes them."""
    from fineloop.data.snapshot_io import save_splits, write_meta

    counts = {m: save_splits(out / m, rows.get(m, []), features(m)) for m in ("sft", "dpo", "kto")}
    methods = [m for m in ("sft", "dpo", "kto") if counts[m]["train"]]
    write_meta(out, {"task": "generation", "counts": counts, "methods": methods, **meta})
    return out


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def row(prompt: str, split: str, **replies: Any) -> dict[str, Any]:
    """One row; string replies become one assistant message, other values stay as given."""
    shaped = {k: assistant(v) if isinstance(v, str) else v for k, v in replies.items()}
    return {
        "prompt": user(prompt),
        "prompt_key": prompt,
        "feedback_ids": [1],
        "split": split,
        **shaped,
    }


@pytest.fixture(scope="session")
def snapshot_writer() -> SnapshotWriter:
    """`write_snapshot(out, {"sft": [row(...)], ...}, **meta) -> Path`."""
    return write_snapshot


@pytest.fixture(scope="session")
def make_row() -> Callable[..., dict[str, Any]]:
    """`row(prompt, split, completion="..." | chosen=..., rejected=... | label=bool)`."""
    return row

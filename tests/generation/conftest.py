"""The tiny Llama, built once per test session; tests that change it copy it first."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal-LM folder (safetensors + tokenizer with a chat template)."""
    from factories import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))

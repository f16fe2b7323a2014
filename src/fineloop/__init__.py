"""fineloop: from user feedback to better models, in one self-hosted loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fineloop.sdk import BufferedLogger, Client, FineloopError

__all__ = ["BufferedLogger", "Client", "FineloopError", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK pulls in httpx; keep `import fineloop` itself free of it.
    if name in {"Client", "BufferedLogger", "FineloopError"}:
        from fineloop import sdk

        return getattr(sdk, name)
    raise AttributeError(name)

"""The Python SDK: `Client` for every API call, `BufferedLogger` for background logging.

from fineloop import Client, BufferedLogger

with Client("http://localhost:8000", api_key="...") as client:
    interaction = client.log_interaction("faq", {"query": q}, {"items": ranked})
    client.thumb("faq", interaction, up=True)
"""

from fineloop.sdk.buffer import BufferedLogger, Rejected
from fineloop.sdk.client import Client
from fineloop.sdk.transport import FineloopError

__all__ = ["BufferedLogger", "Client", "FineloopError", "Rejected"]

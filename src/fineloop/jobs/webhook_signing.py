"""Webhook signatures in the Standard Webhooks scheme (standardwebhooks.com).

Each delivery carries `webhook-id` (the delivery key, the same on every retry, for
deduplication), `webhook-timestamp` (Unix seconds, so a receiver can refuse replays) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the
project's secret `whsec_<base64 of 24 random bytes>`. Any Standard Webhooks library
verifies them; so do ten lines of hmac (see the README).

The secret lives in the store (`webhook_secrets`), one per project, created the first time
it is needed (an admin reads it, or a delivery is signed) and replaced by `rotate`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fineloop.store.schema import WebhookSecret

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 24 random bytes in base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one body: `v1,<base64 HMAC-SHA256>`."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, delivery_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, delivery_id, timestamp, body),
    }


def secret_of(session: Session, project_id: int) -> WebhookSecret:
    """The project's signing secret, created on first use."""
    found = session.get(WebhookSecret, project_id)
    if found is not None:
        return found
    created = WebhookSecret(
        project_id=project_id, secret=new_secret(), created_at=datetime.now(UTC)
    )
    try:
        with session.begin_nested():  # another process may create it at the same moment
            session.add(created)
    except IntegrityError:
        raced = session.get(WebhookSecret, project_id, populate_existing=True)
        assert raced is not None
        return raced
    return created


def rotate(session: Session, project_id: int) -> WebhookSecret:
    """Replace the project's secret; deliveries from now on are signed with the new one."""
    found = secret_of(session, project_id)
    found.secret = new_secret()
    found.created_at = datetime.now(UTC)
    session.flush()
    return found

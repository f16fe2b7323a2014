"""The signing secret of a project's webhook deliveries: read (admin) and rotate."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import KEYED
from fineloop.jobs.webhook_signing import rotate, secret_of
from fineloop.store.projects import get_project

router = APIRouter(
    prefix="/v1/projects/{project}/webhook",
    tags=["webhooks"],
    dependencies=[Admin],
    responses=KEYED,
)


class WebhookSecretPublic(BaseModel):
    secret: str = Field(
        description="Verify deliveries with it: Standard Webhooks, `whsec_<base64 key>`."
    )
    created_at: datetime = Field(description="When this secret was made (or last rotated).")
    scheme: str = Field(
        default="standard-webhooks v1",
        description="Headers webhook-id, webhook-timestamp and webhook-signature "
        "(v1,<base64 HMAC-SHA256 of 'id.timestamp.body'>).",
    )


@router.get("/secret")
def read_secret(project: str, store: StoreDep) -> WebhookSecretPublic:
    """The project's signing secret, made on first request (admin only)."""
    with store.write() as session:
        found = secret_of(session, get_project(session, project).id)
        return WebhookSecretPublic(secret=found.secret, created_at=found.created_at)


@router.post("/secret/rotate")
def rotate_secret(project: str, store: StoreDep) -> WebhookSecretPublic:
    """Replace the secret; deliveries from now on are signed with the new one. Shown once
    here, and to admins at GET .../webhook/secret."""
    with store.write() as session:
        found = rotate(session, get_project(session, project).id)
        return WebhookSecretPublic(secret=found.secret, created_at=found.created_at)

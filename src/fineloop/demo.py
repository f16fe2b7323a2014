"""The demo project `fineloop serve` creates on a fresh store, so there is something to try."""

from __future__ import annotations

from fineloop.errors import NotFound
from fineloop.schemas import ItemIn, ProjectCreate
from fineloop.store import Store
from fineloop.store.items import upsert_items
from fineloop.store.projects import create_project, get_project

DEMO = "demo"
_CATALOG = [
    ("reset-password", "How do I reset my password if I forgot it?"),
    ("change-email", "How can I change the email address on my account?"),
    ("delete-account", "How do I permanently delete my account and data?"),
    ("export-data", "Can I export all my data as a file?"),
    ("two-factor", "How do I turn on two-factor authentication?"),
    ("billing-invoice", "Where do I find invoices for past payments?"),
    ("cancel-subscription", "How do I cancel my subscription?"),
    ("refund", "Can I get a refund for a payment I made by mistake?"),
    ("api-rate-limit", "What are the API rate limits and how do I raise them?"),
    ("invite-team", "How do I invite colleagues to my team workspace?"),
]


def ensure_demo_project(store: Store) -> bool:
    """Create the demo project and its catalog unless it exists; True if created."""
    with store.write() as session:
        try:
            get_project(session, DEMO)
            return False
        except NotFound:
            pass
        project = create_project(
            session,
            ProjectCreate(
                name=DEMO,
                task="embedding",
                description="A small help-center FAQ: search it, then send feedback.",
            ),
        )
        upsert_items(
            session,
            project.id,
            [ItemIn(id=key, text=text, metadata={"section": "help"}) for key, text in _CATALOG],
        )
    return True

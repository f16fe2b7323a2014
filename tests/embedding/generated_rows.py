"""A small catalog with feedback on half of it, and building its snapshot with generated
rows: shared by test_synthetic_queries.py and test_augmentation.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import load_from_disk

from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.feedback.events import LabelEvent
from fineloop.operations import store_feedback, store_items
from fineloop.policies import TrainingPolicy
from fineloop.schemas import ItemIn, ProjectCreate, ProjectUpdate
from fineloop.store import Store
from fineloop.store.projects import create_project, update_project
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.embedding.build import BuildConfig, build_snapshot

CATALOG = {
    "pw": "reset your password from the login page",
    "email": "change the email of your account",
    "delete": "delete or close your account",
    "card": "block a lost or stolen card",
    "refund": "get a refund for a payment",
    "invoice": "find an invoice or bill",
    "cancel": "cancel your subscription plan",
    "invite": "invite a colleague to your team",
    "export": "export your data to a file",
    "transfer": "money transfer to another account",
    "wall": "outer wall of the floor",
    "door": "front door",
    "window": "roof window",
    "stair": "a stair with a beam",
    # words the tiny retriever does not know: it reads them as the nonsense the tiny
    # generator writes, so this item ranks first for many of its queries
    "odd": "quixotic zephyr xylophone",
}
FEEDBACK = {  # query → item: these items have feedback, the other seven none
    "forgot my password": "pw",
    "change my email": "email",
    "close my account": "delete",
    "my card was stolen": "card",
    "money back for a payment": "refund",
    "where is my bill": "invoice",
    "cancel the plan": "cancel",
    "invite my team": "invite",
    "reset login password": "pw",
    "lost card block": "card",
}
BUILD = BuildConfig(min_examples=1, negatives_per_query=2, validation_fraction=0.2)


def synthetic(generator: Path, **settings: Any) -> dict[str, Any]:
    values = {"enabled": True, "generator": str(generator), "queries_per_item": 4}
    return {"synthetic_queries": {**values, "temperature": 1.0, **settings}}


def make_project(store: Store, train: dict[str, Any]) -> None:
    spec = ProjectCreate(name="faq", task="embedding", training_policy=TrainingPolicy(train=train))
    with store.write() as session:
        create_project(session, spec)
    store_items(store, "faq", [ItemIn(id=k, text=v) for k, v in CATALOG.items()])
    events = [LabelEvent(kind="label", input=q, items=[i]) for q, i in FEEDBACK.items()]
    store_feedback(store, "faq", list(events))


def set_train(store: Store, train: dict[str, Any]) -> None:
    with store.write() as session:
        update_project(session, "faq", ProjectUpdate(training_policy=TrainingPolicy(train=train)))


def build(
    store: Store, settings: Settings, out: Path, model: Path, config: BuildConfig = BUILD
) -> BuiltSnapshot:
    data = read_project(store, "faq")
    return build_snapshot(data, settings, out, seed=13, config=config, model_path=str(model))


def rows_of(built: BuiltSnapshot) -> list[dict[str, Any]]:
    pairs = load_from_disk(str(built.path / "pairs"))
    return [{**row, "split": name} for name in pairs for row in pairs[name]]

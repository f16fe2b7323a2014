"""Liveness and readiness: the only route that never needs a key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from fineloop import __version__
from fineloop.api.deps import StoreDep
from fineloop.api.responses import ANY

router = APIRouter(tags=["health"], responses=ANY)


@router.get("/healthz")
def healthz(store: StoreDep) -> dict[str, Any]:
    with store.read() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "database": store.engine.dialect.name}

"""The API routes the embedding family adds: search, select and /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter

from fineloop.api.routes import openai_compat, search

router = APIRouter()
router.include_router(search.router)
router.include_router(openai_compat.router)

"""The API routes the embedding family adds: search, select and /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter

from fineloop.tasks.embedding.serving import openai, routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(openai.router)

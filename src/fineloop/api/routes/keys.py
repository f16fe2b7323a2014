"""API keys: admin-only management; the secret is returned once, at creation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from fineloop import auth
from fineloop.api.deps import Admin, KeyCache, StoreDep
from fineloop.api.responses import CHANGE, KEYED
from fineloop.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from fineloop.validation import INT64_MAX

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[Admin], responses=KEYED)


@router.post("", status_code=status.HTTP_201_CREATED, responses=CHANGE)
def create(spec: ApiKeyCreate, store: StoreDep, request: Request) -> ApiKeyCreated:
    with store.write() as session:
        created = auth.create_key(session, spec.name, spec.scope)
    _forget(request)
    return created


@router.get("")
def list_all(store: StoreDep) -> list[ApiKeyPublic]:
    with store.read() as session:
        return auth.list_keys(session)


@router.delete("/{key_id}")
def revoke(
    key_id: Annotated[int, Path(ge=1, le=INT64_MAX)], store: StoreDep, request: Request
) -> ApiKeyPublic:
    with store.write() as session:
        revoked = auth.revoke_key(session, key_id)
    _forget(request)
    return revoked


def _forget(request: Request) -> None:
    cache: KeyCache = request.app.state.keys
    cache.forget()

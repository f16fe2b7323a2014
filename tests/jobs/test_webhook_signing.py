"""Webhook deliveries are signed (Standard Webhooks); a receiver verifies them with the
project's secret, which admins read and rotate over the API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import MakeProject, fake_plugin, fake_project

from fineloop.api import create_app
from fineloop.config import Settings, get_settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.webhooks import deliver_pending
from fineloop.store import Store
from fineloop.store.projects import get_project

__all__ = ["fake_plugin", "fake_project"]

ADMIN = "admin-key-for-the-tests-0123456789abcdef"  # configured keys: 32+ characters
INGEST = "ingest-key-for-the-tests-0123456789abcdef"


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does, written from the Standard Webhooks spec, not from fineloop."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    given = [part.partition(",")[2] for part in headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, sig) for sig in given)


class RawReceiver:
    """An HTTP server keeping each POST's headers and exact body bytes."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.posts.append((headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[RawReceiver]:
    running = RawReceiver()
    yield running
    running.server.shutdown()


def finish_a_job(store: Store, settings: Settings, name: str) -> int:
    with store.write() as session:
        project = get_project(session, name)
        job = jobs.create_job(
            session, project, "train", {"overrides": {"gain": 0.1}}, claimed_by="t"
        )
    execute(store, settings, job.id, StoreSink(store, job.id))
    return job.id


def test_deliveries_verify_with_the_secret_and_rotation_changes_it(
    store: Store,
    settings: Settings,
    fake_project: MakeProject,
    receiver: RawReceiver,
    client: TestClient,
) -> None:
    name = fake_project(webhook_url=receiver.url)
    job_id = finish_a_job(store, settings, name)
    assert [m["status"] for m in deliver_pending(store)] == ["delivered", "delivered"]

    shown = client.get(f"/v1/projects/{name}/webhook/secret")
    assert shown.status_code == 200, shown.text
    secret = shown.json()["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    for headers, body in receiver.posts:
        assert verify(secret, headers, body)
        assert headers["webhook-id"] == json.loads(body)["delivery"]
    ended = receiver.posts[1]
    assert ended[0]["webhook-id"] == f"job-{job_id}-finished"
    # A changed body, or another secret, does not verify.
    assert not verify(secret, ended[0], ended[1].replace(b"succeeded", b"failed"))
    other = "whsec_" + base64.b64encode(b"x" * 24).decode()
    assert not verify(other, *ended)

    rotated = client.post(f"/v1/projects/{name}/webhook/secret/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert (
        new != secret and client.get(f"/v1/projects/{name}/webhook/secret").json()["secret"] == new
    )
    finish_a_job(store, settings, name)
    deliver_pending(store)
    latest = receiver.posts[-1]
    assert verify(new, *latest) and not verify(secret, *latest)


def test_the_secret_is_for_admins_and_names_a_missing_project(
    settings: Settings, store: Store, fake_project: MakeProject
) -> None:
    name = fake_project()
    with_keys = get_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        api_keys=f"{ADMIN}:admin,{INGEST}:ingest",
    )
    with TestClient(create_app(with_keys, store)) as client:
        path = f"/v1/projects/{name}/webhook/secret"
        assert client.get(path).status_code == 401
        ingest = client.get(path, headers={"Authorization": f"Bearer {INGEST}"})
        assert ingest.status_code == 403
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert client.get(path, headers=admin).json()["secret"].startswith("whsec_")
        missing = client.post("/v1/projects/nope/webhook/secret/rotate", headers=admin)
        assert missing.status_code == 404 and "nope" in missing.text

"""Each test gets its own data directory and a fresh, migrated database.

Set FINELOOP_TEST_POSTGRES to an admin URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
to run the same tests on PostgreSQL: a migrated template database is made once per run and
copied for each test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fineloop.api import create_app
from fineloop.config import Settings, get_settings
from fineloop.store import Store

POSTGRES_ADMIN_URL = os.environ.get("FINELOOP_TEST_POSTGRES", "")
REPO = Path(__file__).resolve().parents[1]
# The shared datasets sit beside the repository; FINELOOP_TEST_DATASETS points elsewhere.
DATASETS = Path(os.environ.get("FINELOOP_TEST_DATASETS") or REPO.parent / "shared" / "datasets")
# The test task families (tests/jobs/jobs_fake_task.py) are installed the way any plugin
# is: a dist-info folder with `fineloop.tasks` entry points on the path, here and in the
# child processes tests start (workers, servers, training jobs).
PLUGIN_PATHS = [str(REPO / "tests" / "plugins"), str(REPO / "tests" / "jobs")]
sys.path[:0] = [path for path in PLUGIN_PATHS if path not in sys.path]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*PLUGIN_PATHS, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
)


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in list(os.environ):
        if name.startswith("FINELOOP_") and name != "FINELOOP_TEST_POSTGRES":
            monkeypatch.delenv(name)
    # Requests wait for index builds and model loads (the default answers 503 after 2 s);
    # tests of the 503 itself set 0.
    monkeypatch.setenv("FINELOOP_SERVING_WAIT_SECONDS", "60")
    # FastAPI's TestClient sends `Host: testserver`, a name the server does not answer
    # unless told (live servers are reached at 127.0.0.1, answered by default).
    monkeypatch.setenv("FINELOOP_ALLOWED_HOSTS", "testserver")
    monkeypatch.chdir(tmp_path)
    # Tests build tiny models in pytest's temp folders and use them as base models, which
    # must lie under the models root: the session's base temp holds them all.
    monkeypatch.setenv("FINELOOP_MODELS_ROOT", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database to copy per test: a SQLite file, or a PostgreSQL template."""
    if not POSTGRES_ADMIN_URL:
        folder = tmp_path_factory.mktemp("template")
        store = Store.open(get_settings(data_dir=folder))
        store.close()
        yield str(folder / "fineloop.db")
        return
    name = f"fl_tpl_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    store = Store.open(get_settings(database_url=url))
    store.close()
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(statement: str) -> None:
    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, _template: str) -> Iterator[Settings]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if not POSTGRES_ADMIN_URL:
        shutil.copy(_template, data_dir / "fineloop.db")
        yield get_settings(data_dir=data_dir)
        return
    name = f"fl_t_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"')
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield get_settings(data_dir=data_dir, database_url=url)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client


@pytest.fixture
def project(client: TestClient) -> str:
    response = client.post("/v1/projects", json={"name": "faq", "task": "embedding"})
    assert response.status_code == 201, response.text
    return "faq"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """`fineloop serve` in a child process, as a user runs it."""

    def __init__(
        self,
        settings: Settings,
        extra_env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
        env["FINELOOP_DATA_DIR"] = str(settings.data_dir)
        env["FINELOOP_SERVING_WAIT_SECONDS"] = str(settings.serving_wait_seconds)
        if settings.models_root:
            env["FINELOOP_MODELS_ROOT"] = str(settings.models_root)
        if settings.database_url:
            env["FINELOOP_DATABASE_URL"] = settings.database_url
        env.update(extra_env or {})
        self.log = settings.data_dir / f"server-{self.port}.log"
        command = [sys.executable, "-m", "fineloop", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--no-demo", *args],
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _tiny_model_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from factories import build_tiny_sentence_model

    return build_tiny_sentence_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_model(_tiny_model_master: Path, tmp_path: Path) -> Path:
    """A private copy of a tiny sentence-transformers model folder (built once per run)."""
    copy = tmp_path / "tiny-model"
    shutil.copytree(_tiny_model_master, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal-LM folder (safetensors + tokenizer with a chat template), built once
    per run under the models root; tests that change it copy it first."""
    from factories import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, run only the tests that open a store (every store comes from the
    migrated `_template`): the others — model code, training, file formats — would run
    exactly as they did on SQLite, so the second pass skips them to keep CI short."""
    if not POSTGRES_ADMIN_URL:
        return

    def opens_a_store(item: pytest.Item) -> bool:
        return "_template" in getattr(item, "fixturenames", ())

    kept = [item for item in items if opens_a_store(item)]
    dropped = [item for item in items if not opens_a_store(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

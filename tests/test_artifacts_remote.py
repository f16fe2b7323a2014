"""Artifacts on an fsspec URL: published with a completion marker, read through a local cache.

The marker and cache rules run on fsspec's in-memory filesystem (quick); the whole loop runs
on a real S3 protocol: moto's S3 server on loopback, spoken to by s3fs. A model trained with
its artifact root there is listed and served by a fresh server process with an empty cache.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import LiveServer
from fineloop import artifacts, base_models
from fineloop.api import create_app
from fineloop.artifacts_remote import EVICT_GRACE, MARKER, evict, filesystem
from fineloop.config import Settings, get_settings
from fineloop.errors import Invalid, NotFound
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.service import start_training
from fineloop.jobs.sink import StoreSink
from fineloop.store import Store
from handmade_snapshot import ITEMS, QUERIES


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def scratch_with(settings: Settings, files: dict[str, bytes]) -> Path:
    folder = artifacts.scratch_dir(settings, "proj", "test")
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_url_root_publishes_with_a_marker_and_reads_through_a_reused_cache(
    tmp_path: Path,
) -> None:
    url = f"memory://fl-{uuid.uuid4().hex[:8]}/root"
    writer = get_settings(data_dir=tmp_path / "writer", artifact_root=url)
    reader = get_settings(data_dir=tmp_path / "reader", artifact_root=url)
    content = {"model.bin": b"weights" * 100, "sub/config.json": b"{}"}
    final = artifacts.version_location(writer, "proj", 1)
    assert final == f"{url}/proj/versions/v1"

    scratch = scratch_with(writer, content)
    assert scratch.is_relative_to((tmp_path / "writer" / "artifact-cache").resolve())
    assert artifacts.publish(writer, scratch, final) == final
    fs, path = filesystem(writer, final)
    assert sorted(fs.find(path)) == sorted(f"{path}/{n}" for n in [*content, MARKER])
    marker = json.loads(fs.cat_file(f"{path}/{MARKER}"))
    assert marker["files"] == {name: len(data) for name, data in content.items()}
    # the trained folder became the writer's cached copy: nothing to download back
    assert not scratch.exists()
    assert tree(Path(artifacts.fetch(writer, final))) == content

    # another machine (another data dir) downloads once, then reuses its copy
    copy = Path(artifacts.fetch(reader, final))
    assert copy.is_relative_to((tmp_path / "reader").resolve()) and tree(copy) == content
    fs.rm_file(f"{path}/model.bin")  # a second download would now fail
    assert artifacts.fetch(reader, final) == str(copy)

    # immutable: a second publish to the same location keeps the first
    assert artifacts.publish(writer, scratch_with(writer, {"other": b"x"}), final) == final
    assert "other" not in [p.rsplit("/", 1)[-1] for p in fs.find(path)]

    # removed (a version never registered): gone for readers, marker first
    artifacts.remove(writer, final)
    assert fs.find(path) == []
    with pytest.raises(NotFound, match="no complete artifact"):
        artifacts.fetch(tmp_and_fresh(tmp_path, url), final)

    # published again after a killed run: a new upload, so a new cached copy
    republished = {"model.bin": b"better weights"}
    artifacts.publish(writer, scratch_with(writer, republished), final)
    assert tree(Path(artifacts.fetch(reader, final))) == republished
    assert artifacts.fetch(reader, final) != str(copy)


def test_the_download_cache_keeps_to_its_size_sparing_recent_copies(tmp_path: Path) -> None:
    url = f"memory://fl-{uuid.uuid4().hex[:8]}/root"
    writer = get_settings(data_dir=tmp_path / "writer", artifact_root=url)
    limit = 1500 / 1024**3  # room for one 1,000-byte copy, not two
    reader = get_settings(data_dir=tmp_path / "reader", artifact_root=url, artifact_cache_gb=limit)
    finals = [artifacts.version_location(writer, "proj", n) for n in (1, 2, 3)]
    for n, final in enumerate(finals):
        artifacts.publish(writer, scratch_with(writer, {"w": bytes([n]) * 1000}), final)

    first = Path(artifacts.fetch(reader, finals[0]))
    hour_ago = time.time() - 3600
    os.utime(first, (hour_ago, hour_ago))  # not used for an hour
    second = Path(artifacts.fetch(reader, finals[1]))
    assert not first.exists() and second.is_dir()  # over the limit: the old copy went
    third = Path(artifacts.fetch(reader, finals[2]))
    assert second.is_dir() and third.is_dir()  # over the limit, but both just used

    a_little_earlier = time.time() - 10
    os.utime(second, (a_little_earlier, a_little_earlier))
    later = time.time() + EVICT_GRACE + 1
    assert evict(reader, now=later) == [second]  # the least recently used goes first
    # an evicted copy comes back on the next read, whole
    assert tree(Path(artifacts.fetch(reader, finals[0]))) == {"w": bytes([0]) * 1000}
    unlimited = get_settings(
        data_dir=tmp_path / "reader", artifact_root=url, artifact_cache_gb=None
    )
    assert evict(unlimited, now=later + 3600) == []


def tmp_and_fresh(tmp_path: Path, url: str) -> Settings:
    return get_settings(data_dir=tmp_path / f"fresh-{uuid.uuid4().hex[:6]}", artifact_root=url)


def test_a_half_uploaded_folder_is_never_read(tmp_path: Path) -> None:
    url = f"memory://fl-{uuid.uuid4().hex[:8]}/root"
    settings = get_settings(data_dir=tmp_path, artifact_root=url)
    final = artifacts.version_location(settings, "proj", 3)
    fs, path = filesystem(settings, final)
    fs.pipe_file(f"{path}/model.safetensors", b"half of a model")  # killed before its marker
    with pytest.raises(NotFound, match="upload never finished"):
        artifacts.fetch(settings, final)
    assert not (tmp_path / "artifact-cache" / "downloads").exists()


def test_local_roots_keep_renaming_and_reading_in_place(tmp_path: Path) -> None:
    for configured in (None, f"file://{tmp_path / 'elsewhere'}"):
        settings = get_settings(data_dir=tmp_path / "data", artifact_root=configured)
        final = artifacts.snapshot_location(settings, "proj", "abc")
        assert not artifacts.is_remote(final) and "://" not in final
        scratch = scratch_with(settings, {"a.txt": b"a"})
        assert artifacts.publish(settings, scratch, final) == final
        assert not scratch.exists() and (Path(final) / "a.txt").read_bytes() == b"a"
        assert artifacts.fetch(settings, final) == final  # no copy, no cache
        assert Path(final) == artifacts.snapshot_dir(settings, "proj", "abc")
    # A hub id is no artifact: fetch hands it to base_models, which downloads it through
    # huggingface_hub (not here: no network in tests); it is recognised without one.
    base_models.check(settings, "sentence-transformers/all-MiniLM-L6-v2")


def test_a_url_without_its_driver_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINELOOP_ARTIFACT_OPTIONS", '{"token": "anon"}')
    settings = get_settings(data_dir=tmp_path, artifact_root="gs://bucket/prefix")
    assert settings.artifact_options == {"token": "anon"}
    try:
        import gcsfs  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        with pytest.raises(Invalid, match=r"pip install 'fineloop\[gcs\]'"):
            artifacts.fetch(settings, "gs://bucket/prefix/p/versions/v1")


# --- the whole loop on S3 (moto's server) -------------------------------------------------

TRAIN = {
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "early_stopping_patience": None,
}


@pytest.fixture
def s3() -> Iterator[dict[str, Any]]:
    """An S3 endpoint on loopback with one bucket; yields the fsspec options to reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "test", "secret": "test"}
    boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket="fineloop")
    yield options
    server.stop()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_a_model_trained_onto_s3_is_listed_and_served_by_a_fresh_server(
    settings: Settings, store: Store, tiny_model: Path, s3: dict[str, Any], tmp_path: Path
) -> None:
    remote = settings.model_copy(
        update={"artifact_root": "s3://fineloop/artifacts", "artifact_options": s3}
    )
    with TestClient(create_app(remote, store)) as client:
        policy = {"train": TRAIN, "bootstrap_samples": 200}
        body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
        ok(client.post("/v1/projects", json=body | {"training_policy": policy}), 201)
        items = [{"id": key, "text": text} for key, text in ITEMS.items()]
        ok(client.put("/v1/projects/faq/items", json={"items": items}))
        labels = [
            {"kind": "label", "input": query, "items": [item]}
            for item, queries in QUERIES.items()
            for query in queries
        ]
        ok(client.post("/v1/projects/faq/feedback/batch", json={"events": labels}), 201)
    job = start_training(store, "faq", claimed_by="test-worker")
    assert execute(store, remote, job.id, StoreSink(store, job.id)) == jobs.SUCCEEDED

    # the version and its snapshot live in the bucket, each complete with its marker
    with store.read() as session:
        done = jobs.job_public(session, jobs.get_job(session, job.id))
    version_uri = "s3://fineloop/artifacts/faq/versions/v1"
    snapshot_uri = f"s3://fineloop/artifacts/faq/snapshots/{done['snapshot_id']}"
    fs, _ = filesystem(remote, version_uri)
    for uri in (version_uri, snapshot_uri):
        path = uri.removeprefix("s3://")
        stored = {p.rsplit("/", 1)[-1] for p in fs.find(path)}
        assert MARKER in stored, uri
        marker = json.loads(fs.cat_file(f"{path}/{MARKER}"))
        assert len(fs.find(path)) == len(marker["files"]) + 1
    assert "fineloop.json" in {p.rsplit("/", 1)[-1] for p in fs.find(version_uri[5:])}
    assert not (settings.data_dir / "artifacts").exists()  # nothing published locally

    # a fresh server process, its own empty data dir, the same store and bucket
    fresh = get_settings(data_dir=tmp_path / "fresh", database_url=settings.resolved_database_url)
    fresh.data_dir.mkdir()
    env = {
        "FINELOOP_ARTIFACT_ROOT": remote.resolved_artifact_root,
        "FINELOOP_ARTIFACT_OPTIONS": json.dumps(s3),
    }
    server = LiveServer(fresh, extra_env=env)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            versions = ok(http.get("/v1/projects/faq/versions"))
            assert [(v["version"], v["artifact_uri"]) for v in versions][1] == ("v1", version_uri)
            query = {"query": "my card is stolen", "k": 3, "version": "v1"}
            found = ok(http.post("/v1/projects/faq/search", json=query))
            assert found["model_version"] == "v1" and len(found["items"]) == 3
    finally:
        server.stop()
    downloads = list((fresh.data_dir / "artifact-cache" / "downloads").glob("v1-*"))
    assert len(downloads) == 1 and (downloads[0] / "fineloop.json").is_file()

"""Artifacts on an fsspec URL (S3, GCS, ...): upload with a completion marker, cached download.

Object stores have no atomic folder rename, so a folder counts as published only once its
marker `.fineloop-complete` exists. The marker is written after every file and lists them
with their sizes and an upload id. Training registers a version only after `upload`
returned, so the registry never points at a half-uploaded folder, and `download` refuses a
folder without a marker (an upload killed midway) instead of serving part of a model.

Downloads land in `<root>/downloads/<name>-<key>`, the key hashing the location and the
upload id: an unchanged artifact is read from disk again (one small read of the marker per
load), one re-uploaded after a killed run gets a new folder. Publishing moves the scratch
folder into that cache, so the machine that trained a version never downloads it back.
The cache can be deleted at any time; it fills again on demand. Every read marks its copy
as used (its folder's mtime); after a download, copies beyond `artifact_cache_gb` are
deleted, least recently used first, sparing any used within `EVICT_GRACE` (a process may
be loading it right now; a model already loaded keeps its memory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fineloop.artifacts import root
from fineloop.config import Settings
from fineloop.errors import Invalid, NotFound

MARKER = ".fineloop-complete"
CACHE = "downloads"
EVICT_GRACE = 600.0  # seconds: a copy used this recently is never evicted


def filesystem(settings: Settings, uri: str) -> tuple[Any, str]:
    """The fsspec filesystem for `uri` (with `artifact_options`) and the path inside it."""
    import fsspec  # type: ignore[import-untyped]

    try:
        fs, path = fsspec.core.url_to_fs(uri, **settings.artifact_options)
    except ImportError as error:
        protocol = uri.partition("://")[0]
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol)
        hint = f" (pip install 'fineloop[{extra}]')" if extra else ""
        raise Invalid(
            f"artifact location {uri!r} needs the fsspec driver for {protocol}://{hint}: {error}",
            field="artifact_root",
        ) from None
    return fs, str(path).rstrip("/")


def upload(settings: Settings, scratch: Path, final: str) -> str:
    """Publish the scratch folder at `final`: every file, then the marker. The first
    complete upload wins (artifacts are immutable); the scratch folder becomes the cache."""
    fs, path = filesystem(settings, final)
    if read_marker(fs, path) is not None:
        shutil.rmtree(scratch, ignore_errors=True)
        return final
    marker = put_folder(fs, scratch, path)
    (scratch / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
    _settle(scratch, cache_dir(settings, final, marker))
    return final


def put_folder(fs: Any, folder: Path, path: str) -> dict[str, Any]:
    """Upload every file of `folder` to `path`, then the marker listing them; the marker."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    names = [p.relative_to(folder).as_posix() for p in files]
    marker = {
        "upload": uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "files": {name: p.stat().st_size for name, p in zip(names, files, strict=True)},
    }
    if files:
        fs.put([str(p) for p in files], [f"{path}/{name}" for name in names])
    fs.pipe_file(f"{path}/{MARKER}", json.dumps(marker, indent=1, sort_keys=True).encode())
    return marker


def get_folder(fs: Any, path: str, marker: dict[str, Any], folder: Path) -> None:
    """Download the files a marker lists into `folder`, checking every size."""
    names = sorted(marker["files"])
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
    if names:
        fs.get([f"{path}/{name}" for name in names], [str(folder / n) for n in names])
    for name, size in marker["files"].items():
        got = (folder / name).stat().st_size
        if got != size:
            raise NotFound(f"artifact {path!r}: {name} has {got} bytes, expected {size}")


def download(settings: Settings, uri: str) -> Path:
    """A local copy of the published folder at `uri`, downloaded once per upload."""
    fs, path = filesystem(settings, uri)
    marker = read_marker(fs, path)
    if marker is None:
        raise NotFound(
            f"no complete artifact at {uri!r}: it is missing or its upload never finished "
            f"(no {MARKER})",
            field="artifact",
        )
    target = cache_dir(settings, uri, marker)
    if target.is_dir():
        _mark_used(target)
        return target
    partial = target.with_name(f"{target.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        get_folder(fs, path, marker, partial)
        (partial / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        _settle(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _mark_used(target)
    evict(settings)
    return target


def evict(settings: Settings, now: float | None = None) -> list[Path]:
    """Delete the least recently used cached copies while the cache is over its limit;
    the deleted folders (a copy used within `EVICT_GRACE` is kept, however large)."""
    if settings.artifact_cache_gb is None:
        return []
    cache = root(settings) / CACHE
    now = time.time() if now is None else now
    copies = []
    for folder in cache.glob("*") if cache.is_dir() else ():
        if folder.is_dir() and ".part-" not in folder.name:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            copies.append((folder.stat().st_mtime, size, folder))
    total = sum(size for _, size, _ in copies)
    limit = settings.artifact_cache_gb * 1024**3
    deleted = []
    for used, size, folder in sorted(copies):
        if total <= limit:
            break
        if now - used < EVICT_GRACE:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
        deleted.append(folder)
    return deleted


def _mark_used(folder: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(folder)


def delete(settings: Settings, uri: str) -> None:
    """Remove the artifact at `uri`, marker first so nobody reads it while it goes."""
    fs, path = filesystem(settings, uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(f"{path}/{MARKER}")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)
    fs.invalidate_cache(path)


def read_marker(fs: Any, path: str) -> dict[str, Any] | None:
    """The folder's completion marker, read afresh (listings may be cached), or None."""
    try:
        data = fs.cat_file(f"{path}/{MARKER}")
    except FileNotFoundError:
        return None
    marker: dict[str, Any] = json.loads(data)
    return marker


def cache_dir(settings: Settings, uri: str, marker: dict[str, Any]) -> Path:
    key = hashlib.sha256(f"{uri}\n{marker['upload']}".encode()).hexdigest()[:16]
    name = uri.rstrip("/").rsplit("/", 1)[-1][:24]
    return root(settings) / CACHE / f"{name}-{key}"


def _settle(folder: Path, target: Path) -> None:
    """Move a complete folder to its cache path; if another process got there first,
    theirs is the same upload, so this copy is dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.rename(target)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)

"""Where snapshots and model versions live: a local folder (default) or any fsspec URL.

Writers always build in a local scratch folder and then publish it. On a local root the
finished folder is renamed into place (atomic), so a crash never leaves a half-written
artifact at a final path. On a URL root (`s3://bucket/prefix`, `gs://...`) publishing
uploads the files and writes a completion marker last (see `artifacts_remote`); readers
download a published folder into a local cache keyed by its location and upload, so the
ML libraries always read local files. `file://` URLs are local folders.

Locations are strings: a local path or a URL. A version whose artifact is a base model
name (v0) is read through `base_models.resolve`, with the same limits as any base model.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from fineloop.config import Settings

LOCAL_PROTOCOLS = ("file", "local")


def is_remote(location: str) -> bool:
    """Whether `location` is a URL of a non-local fsspec filesystem (s3://, gs://, memory://)."""
    protocol, sep, _ = location.partition("://")
    return bool(sep) and protocol not in LOCAL_PROTOCOLS


def local_path(location: str) -> str:
    """A local location as a plain path (`file:///x` -> `/x`); anything else unchanged."""
    protocol, sep, rest = location.partition("://")
    return rest if sep and protocol in LOCAL_PROTOCOLS else location


def root(settings: Settings) -> Path:
    """The local folder that holds scratch folders (and, for a URL root, the download
    cache): the artifact root itself, or `data_dir/artifact-cache` for a URL root."""
    configured = settings.resolved_artifact_root
    if is_remote(configured):
        return (Path(settings.data_dir) / "artifact-cache").resolve()
    return Path(local_path(configured))


def location(settings: Settings, *parts: str) -> str:
    """`parts` joined under the artifact root, as a path or a URL."""
    configured = settings.resolved_artifact_root
    if is_remote(configured):
        return "/".join([configured.rstrip("/"), *parts])
    return str(root(settings).joinpath(*parts))


def snapshot_location(settings: Settings, project: str, snapshot_id: str) -> str:
    return location(settings, project, "snapshots", snapshot_id)


def version_location(settings: Settings, project: str, number: int) -> str:
    return location(settings, project, "versions", f"v{number}")


def snapshot_dir(settings: Settings, project: str, snapshot_id: str) -> Path:
    """The snapshot's folder on a local root."""
    return root(settings) / project / "snapshots" / snapshot_id


def version_dir(settings: Settings, project: str, number: int) -> Path:
    """The version's folder on a local root."""
    return root(settings) / project / "versions" / f"v{number}"


def scratch_dir(settings: Settings, project: str, label: str) -> Path:
    """A fresh private local folder on the same filesystem as the final one on a local
    root (so the rename that publishes it is atomic), and as the cache on a URL root."""
    path = root(settings) / project / "tmp" / f"{label}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def publish(settings: Settings, scratch: Path, final: str) -> str:
    """Make a finished scratch folder the artifact at `final`; returns `final`.

    Artifacts are immutable: if `final` is already published, the first writer wins and the
    scratch folder is dropped. On a URL root the scratch folder becomes the local cached copy.
    """
    if is_remote(final):
        from fineloop.artifacts_remote import upload

        return upload(settings, scratch, final)
    target = Path(local_path(final))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(scratch, ignore_errors=True)
        return final
    scratch.rename(target)
    return final


def fetch(settings: Settings, uri: str) -> str:
    """A local path to read the artifact at `uri` from: the path itself on a local root,
    a cached download of a published folder on a URL root. Anything not under the artifact
    root is a base model (a v0 version, a project's base): `base_models.resolve` decides
    whether it may be loaded (models root, packaged models, hub ids; safetensors only)."""
    if not is_remote(uri):
        path = local_path(uri)
        if _under_artifact_root(settings, path):
            return path
        from fineloop import base_models

        return base_models.resolve(settings, path)
    from fineloop.artifacts_remote import download

    return str(download(settings, uri))


def _under_artifact_root(settings: Settings, path: str) -> bool:
    """Whether a local path lies in the folders fineloop writes artifacts to."""
    if not Path(path).is_absolute():
        return False
    target = Path(os.path.normpath(path))
    folder = root(settings)
    return target.is_relative_to(folder) or target.is_relative_to(folder.resolve())


def remove(settings: Settings, uri: str) -> None:
    """Delete an artifact that must not exist (published by a run killed before it
    registered it). Missing is fine."""
    if is_remote(uri):
        from fineloop.artifacts_remote import delete

        delete(settings, uri)
        return
    shutil.rmtree(local_path(uri), ignore_errors=True)

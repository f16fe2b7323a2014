"""Where snapshots and model versions live under the artifact root.

Writers build in a scratch folder and rename into place, so a crash never leaves a half
written artifact at a final path.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from fineloop.config import Settings


def root(settings: Settings) -> Path:
    return Path(settings.resolved_artifact_root)


def snapshot_dir(settings: Settings, project: str, snapshot_id: str) -> Path:
    return root(settings) / project / "snapshots" / snapshot_id


def version_dir(settings: Settings, project: str, number: int) -> Path:
    return root(settings) / project / "versions" / f"v{number}"


def scratch_dir(settings: Settings, project: str, label: str) -> Path:
    """A fresh private folder on the same filesystem as the final one (rename is atomic)."""
    path = root(settings) / project / "tmp" / f"{label}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def publish(scratch: Path, final: Path) -> Path:
    """Move a finished scratch folder to its final path, atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(scratch, ignore_errors=True)  # immutable: the first writer wins
        return final
    scratch.rename(final)
    return final

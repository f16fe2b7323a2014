"""A training job's checkpoints mirrored to a URL artifact root, so that a retry on another
machine resumes instead of starting over.

On a local artifact root every attempt of a job finds the checkpoints an earlier one left
in the job's scratch folder (one machine, or a shared volume). On a URL root each worker
has a scratch folder of its own, so while a job trains a thread copies every complete
checkpoint (a `checkpoint-N` folder holding `trainer_state.json`, which the Trainer writes
last) to `<root>/<project>/tmp/job<id>/<same relative path>`, with a completion marker,
and removes mirrored checkpoints the Trainer has since deleted. Before training, a scratch
folder without checkpoints gets the mirrored ones back. The job runner deletes the mirror
once the job has ended. A worker killed between two scans loses at most the newest
checkpoint: the retry resumes from the one before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fineloop import artifacts
from fineloop.config import Settings

log = logging.getLogger("fineloop.jobs")
INTERVAL = 5.0  # seconds between scans of the scratch folder
STATE = "trainer_state.json"


def mirror_location(settings: Settings, project: str, job_id: int) -> str:
    return artifacts.location(settings, project, "tmp", f"job{job_id}")


def wanted(settings: Settings) -> bool:
    return settings.mirror_checkpoints and artifacts.is_remote(settings.resolved_artifact_root)


def local_checkpoints(scratch: Path) -> set[str]:
    """Relative paths of the complete checkpoints under `scratch`."""
    return {
        state.parent.relative_to(scratch).as_posix()
        for state in scratch.rglob(f"checkpoint-*/{STATE}")
    }


class CheckpointMirror:
    """Copies one job's checkpoints between its scratch folder and the artifact root."""

    def __init__(self, settings: Settings, project: str, job_id: int, scratch: Path) -> None:
        from fineloop.artifacts_remote import filesystem

        self.scratch = scratch
        self.fs, self.path = filesystem(settings, mirror_location(settings, project, job_id))
        self.pushed: set[str] = set()

    def remote(self) -> set[str]:
        """Relative paths of the complete mirrored checkpoints."""
        from fineloop.artifacts_remote import MARKER

        found = self.fs.glob(f"{self.path}/**/checkpoint-*/{MARKER}")
        return {str(p).removeprefix(self.path + "/").rsplit("/", 1)[0] for p in found}

    def restore(self) -> list[str]:
        """Download the mirrored checkpoints into an empty scratch folder; what came back."""
        from fineloop.artifacts_remote import get_folder, read_marker

        if local_checkpoints(self.scratch):
            return []
        restored = []
        for relative in sorted(self.remote()):
            marker = read_marker(self.fs, f"{self.path}/{relative}")
            if marker is None:
                continue
            partial = self.scratch / f"{relative}.part"
            get_folder(self.fs, f"{self.path}/{relative}", marker, partial)
            partial.rename(self.scratch / relative)  # complete, or not there at all
            restored.append(relative)
        self.pushed = set(restored)
        return restored

    def scan(self) -> list[str]:
        """Upload the checkpoints not mirrored yet and drop those gone locally; uploaded."""
        from fineloop.artifacts_remote import put_folder

        present = local_checkpoints(self.scratch)
        uploaded = []
        for relative in sorted(present - self.pushed):
            try:
                put_folder(self.fs, self.scratch / relative, f"{self.path}/{relative}")
            except FileNotFoundError:  # the Trainer rotated it away meanwhile
                self._remove(relative)
                continue
            self.pushed.add(relative)
            uploaded.append(relative)
        for relative in sorted(self.pushed - present):
            if not (self.scratch / relative).exists():
                self._remove(relative)
                self.pushed.discard(relative)
        return uploaded

    def _remove(self, relative: str) -> None:
        from fineloop.artifacts_remote import MARKER

        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.path}/{relative}/{MARKER}")  # unreadable at once
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(f"{self.path}/{relative}", recursive=True)


@contextlib.contextmanager
def mirrored(
    settings: Settings, project: str, job_id: int, scratch: Path, sink: Any
) -> Iterator[CheckpointMirror | None]:
    """Restore the job's mirrored checkpoints, then mirror new ones while the block runs
    (nothing on a local artifact root)."""
    if not wanted(settings):
        yield None
        return
    mirror = CheckpointMirror(settings, project, job_id, scratch)
    restored = mirror.restore()
    if restored:
        sink.log(f"restored {len(restored)} checkpoint(s) of an earlier attempt from the store")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(INTERVAL):
            try:
                mirror.scan()
            except Exception:  # a store hiccup: the next scan tries again
                log.exception("mirroring the checkpoints of job %s failed", job_id)

    thread = threading.Thread(target=loop, name=f"checkpoint-mirror-{job_id}", daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        stop.set()
        thread.join(INTERVAL + 60)


def delete_mirror(settings: Settings, project: str, job_id: int) -> None:
    """Remove a finished job's mirrored checkpoints (missing is fine)."""
    if not artifacts.is_remote(settings.resolved_artifact_root):
        return
    from fineloop.artifacts_remote import filesystem

    fs, path = filesystem(settings, mirror_location(settings, project, job_id))
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def mirrors(settings: Settings) -> dict[int, list[str]]:
    """Job id -> the locations of its mirrors in the store (none on a local root): what a
    starting worker sweeps for jobs that ended without the runner (e.g. a queued retry that
    was cancelled)."""
    configured = settings.resolved_artifact_root
    if not artifacts.is_remote(configured):
        return {}
    from fineloop.artifacts_remote import filesystem

    fs, path = filesystem(settings, configured)
    found: dict[int, list[str]] = {}
    for entry in fs.glob(f"{path}/*/tmp/job*"):
        digits = str(entry).rstrip("/").rsplit("/", 1)[-1][3:]
        if digits.isdigit():
            project = str(entry).rstrip("/").rsplit("/", 3)[-3]
            found.setdefault(int(digits), []).append(project)
    return found

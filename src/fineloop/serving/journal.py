"""`InteractionJournal`: served interactions reach the store without a round trip on the
request path, and survive the server being killed.

A served request appends its interaction as one line to a journal file (a `write(2)` into
the page cache, no transaction) and returns its id at once. A flusher thread stores the
pending lines in one transaction every `interaction_flush_seconds`, then deletes the
journal segment they were in. The guarantee, tested with SIGKILL:

- an interaction id a client received is in the journal before the response is sent, so a
  killed server loses none: the next server on the same `data_dir` replays the dead
  process's segments into the store (idempotently: ids already stored are skipped);
- feedback on it is never refused for being early: every store session of this process
  flushes the pending interactions first (`Store.before_session`), so this process reads its
  own writes; another server sharing the database sees them within the flush interval, and
  its feedback route waits that long once before calling an interaction unknown.

Power loss is another matter: like any page-cache write, a line survives it only once the
kernel wrote it back (`interaction_journal_fsync` syncs every append, at a cost per request).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from fineloop.config import Settings
from fineloop.errors import NotFound
from fineloop.operations import store_interactions
from fineloop.schemas import InteractionCreate
from fineloop.store import Store

log = logging.getLogger("fineloop.serving")

Row = dict[str, Any]  # one interaction as the journal holds it: InteractionCreate's fields

_JOURNALS: weakref.WeakKeyDictionary[Store, InteractionJournal] = weakref.WeakKeyDictionary()
_ATTACH = threading.Lock()


def attach(store: Store, settings: Settings) -> InteractionJournal | None:
    """The store's journal (made on the first call, started on first use), or None when
    `interaction_journal` is off."""
    if not settings.interaction_journal:
        return None
    with _ATTACH:
        journal = _JOURNALS.get(store)
        if journal is None:
            journal = InteractionJournal(
                store,
                settings.data_dir / "journal",
                flush_seconds=settings.interaction_flush_seconds,
                fsync=settings.interaction_journal_fsync,
            )
            _JOURNALS[store] = journal
            store.before_session.append(journal.flush_quietly)
        return journal


def journal_of(store: Store) -> InteractionJournal | None:
    return _JOURNALS.get(store)


class InteractionJournal:
    """One process's write-ahead journal of interactions for one store; thread-safe."""

    def __init__(
        self,
        store: Store,
        root: Path,
        *,
        flush_seconds: float = 0.02,
        fsync: bool = False,
    ) -> None:
        self.store = store
        self.root = root
        self.flush_seconds = flush_seconds
        self.fsync = fsync
        self._lock = threading.Lock()  # the open segment and the pending lines
        self._flushing = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: list[tuple[str, Row]] = []
        self._storing = False  # a flush has taken lines out of _pending and not stored them
        self._segment = 0
        self._fd: int | None = None
        self._dir: Path | None = None
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._retained: list[Path | None] = []  # segments of a failed flush, kept for replay
        self.stored = 0  # interactions this journal put in the store (its own and replayed)

    # -- the request path -------------------------------------------------------------

    def append(self, project: str, rows: Sequence[Row]) -> None:
        """Make `rows` durable against a crash of this process; they reach the store soon."""
        if self._thread is None:
            self.start()
        data = b"".join(
            orjson.dumps({"project": project, **row}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
            for row in rows
        )
        with self._lock:
            fd = self._open_segment()
            written = os.write(fd, data)
            if written != len(data):  # a full disk: refuse rather than half-log
                raise OSError(f"interaction journal: wrote {written} of {len(data)} bytes")
            if self.fsync:
                os.fsync(fd)
            self._pending.extend((project, row) for row in rows)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- flushing ---------------------------------------------------------------------

    def flush(self) -> None:
        """Store every pending interaction now (no-op when none is pending, or when called
        from inside a flush of this journal)."""
        if getattr(self._local, "inside", False):
            return
        if not self._pending and not self._storing:  # nothing waits, nothing is half-stored
            return
        with self._flushing:
            self._local.inside = True
            try:
                self._flush_locked()
            finally:
                self._local.inside = False

    def flush_quietly(self) -> None:
        """`flush` for a session about to open: a store that cannot take the journal now must
        not fail the session too (the flusher keeps retrying; the lines stay on disk)."""
        try:
            self.flush()
        except Exception:
            log.exception("storing journaled interactions failed; the flusher retries")

    def _flush_locked(self) -> None:
        with self._lock:
            self._storing = True  # first: a reader must never see neither pending nor storing
            batch, self._pending = self._pending, []
            done_segment = self._close_segment()
        if not batch:
            self._storing = False
            return
        try:
            self._store(batch)
        except Exception:
            with self._lock:  # keep them pending (and their segment on disk) for a retry
                self._pending[:0] = batch
                self._retained.append(done_segment)
            raise
        finally:
            self._storing = False
        for segment in [*self._retained, done_segment]:
            _remove(segment)
        self._retained = []

    def _store(self, batch: Sequence[tuple[str, Row]]) -> None:
        by_project: dict[str, list[InteractionCreate]] = defaultdict(list)
        for project, row in batch:
            by_project[project].append(_spec(row))
        for project, specs in by_project.items():
            try:
                store_interactions(self.store, project, specs)
            except NotFound:  # the project was deleted meanwhile: nothing to attach them to
                log.warning("dropped %d interactions of deleted project %r", len(specs), project)
                continue
            self.stored += len(specs)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait()
            self._wake.clear()
            stop.wait(self.flush_seconds)  # gather what arrives meanwhile
            try:
                self.flush()
            except Exception:
                log.exception("storing journaled interactions failed; retrying")
                stop.wait(max(self.flush_seconds, 1.0))
                self._wake.set()

    # -- segments and recovery --------------------------------------------------------

    def start(self) -> None:
        """Claim a journal folder, replay those left by dead processes, start flushing."""
        with self._lock:
            if self._thread is not None:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                self.recover()
            except Exception:  # the store is down: the folders wait for the next start
                log.exception("replaying journaled interactions failed")
            self._dir = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self._dir.mkdir()
            self._lock_fd = _claim(self._dir)
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="fineloop-journal", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Store what is pending and give the folder up (a clean shutdown)."""
        try:
            self.flush()
        except Exception:  # the segments stay: the next start replays them
            log.exception("storing journaled interactions at shutdown failed")
            return
        with self._lock:
            self._stop.set()
            self._wake.set()
            self._thread = None  # an append after this starts a new folder
            self._close_segment()
            if self._lock_fd is not None and self._dir is not None and not self._pending:
                shutil.rmtree(self._dir, ignore_errors=True)
                os.close(self._lock_fd)
                self._lock_fd = None

    def recover(self) -> int:
        """Store the interactions journaled by processes that died; returns how many."""
        replayed = 0
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if folder == self._dir:
                continue
            try:
                lock_fd = _claim(folder)
            except BlockingIOError:
                continue  # its process is alive and flushes its own
            try:
                for segment in sorted(folder.glob("*.jsonl"), key=_segment_number):
                    rows = list(_read_segment(segment))
                    self._store(rows)
                    replayed += len(rows)
                    segment.unlink()
                (folder / "lock").unlink(missing_ok=True)
                folder.rmdir()
            finally:
                os.close(lock_fd)
        if replayed:
            log.info("replayed %d journaled interactions of stopped servers", replayed)
        return replayed

    def _open_segment(self) -> int:
        if self._fd is None:
            if self._thread is None:
                raise RuntimeError("InteractionJournal.start() was not called")
            assert self._dir is not None
            self._segment += 1
            path = self._dir / f"{self._segment}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def _close_segment(self) -> Path | None:
        if self._fd is None:
            return None
        os.close(self._fd)
        self._fd = None
        assert self._dir is not None
        return self._dir / f"{self._segment}.jsonl"


def _spec(row: Mapping[str, Any]) -> InteractionCreate:
    """Rows were validated when served: rebuilt without validating again."""
    fields = dict(row)
    fields.pop("project", None)
    created = fields.get("created_at")
    if isinstance(created, str):
        fields["created_at"] = datetime.fromisoformat(created)
    return InteractionCreate.model_construct(**fields)


def _read_segment(path: Path) -> Iterable[tuple[str, Row]]:
    for line in path.read_bytes().splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:  # a line cut by the crash was never acknowledged
            continue
        yield row.pop("project"), row


def _segment_number(path: Path) -> int:
    return int(path.stem) if path.stem.isdecimal() else 0


def _claim(folder: Path) -> int:
    """Hold the folder's lock for the life of this process (BlockingIOError if held)."""
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def _remove(segment: Path | None) -> None:
    if segment is not None:
        segment.unlink(missing_ok=True)

"""Which checkpoint a retried job resumes from: the newest one whose trainer state reads
whole. A SIGKILL while the Trainer saves can leave trainer_state.json empty or cut."""

from __future__ import annotations

import json
from pathlib import Path

from fineloop.runtime import last_checkpoint


def checkpoint(root: Path, step: int, state: str | None) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_the_newest_whole_checkpoint_is_chosen(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    whole = checkpoint(tmp_path, 16, json.dumps({"global_step": 16}))
    checkpoint(tmp_path, 8, json.dumps({"global_step": 8}))
    assert last_checkpoint(tmp_path) == whole
    checkpoint(tmp_path, 24, None)  # killed before the state was written
    checkpoint(tmp_path, 32, "")  # killed while writing it: the file is empty
    checkpoint(tmp_path, 40, '{"global_step": 40, "log_hist')  # cut in the middle
    checkpoint(tmp_path, 48, "[]")  # not a trainer state
    assert last_checkpoint(tmp_path) == whole
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == whole

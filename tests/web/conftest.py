"""Dashboard tests reuse the job tests' fake task: it trains in a second, with a loss series."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from jobs_fixtures import fake_plugin, fake_project

__all__ = ["fake_plugin", "fake_project"]

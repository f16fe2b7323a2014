"""Standalone `fineloop worker` processes for reliability tests, started as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fineloop.config import Settings


class WorkerProcess:
    """`python -m fineloop worker ...` on the test's store; `name` is its `host:pid`."""

    def __init__(self, settings: Settings, log: Path, *args: str, **env: str) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
        environment["FINELOOP_DATA_DIR"] = str(settings.data_dir)
        if settings.models_root:  # the tiny base models live under pytest's temp folders
            environment["FINELOOP_MODELS_ROOT"] = str(settings.models_root)
        if settings.database_url:
            environment["FINELOOP_DATABASE_URL"] = settings.database_url
        environment |= env
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fineloop", "worker", "--poll", "0.2", *args],
            env=environment,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.name = ""
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()}")
            for line in self.log.read_text().splitlines():
                if " ready: " in line:
                    self.name = line.split()[1]
                    return
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start: {self.log.read_text()}")

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

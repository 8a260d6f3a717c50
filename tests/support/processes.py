"""Long-running processes for the operator tests: Flower, the API, a worker of another app."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

# The chaos lab's port picker, which never hands out a shared server's port.
from chaos.servers import free_port as free_port
from chaos.servers import free_ports as free_ports
from tests.support.paths import ROOT
from tests.support.waiting import wait_until


def http_ready(url: str, auth: tuple[str, str] | None = None) -> Callable[[], bool]:
    """A predicate: ``url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, auth=auth, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


class Service:
    """A process in a session of its own, logging to a file; ``stop`` ends its whole group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return ready()

        wait_until(check, timeout=timeout, interval=0.2, what=f"{self.name} ready")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def celery(app: str, *args: str) -> list[str]:
    """The command line of ``celery -A app ...`` in this interpreter."""
    return [sys.executable, "-m", "celery", "-A", app, *args]


def ingestion_cli(*args: str) -> list[str]:
    """The command line of the ``ingestion`` command in this interpreter."""
    return [sys.executable, "-m", "ingestion.cli", *args]

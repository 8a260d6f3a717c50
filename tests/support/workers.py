"""Real ``celery worker`` and ``celery beat`` processes of the test app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.waiting import wait_until


class Workers:
    """Real ``celery worker`` processes running ``tests/support/synthetic_app.py``."""

    def __init__(self, tmp_path: Path, env: dict[str, str], queue: str) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.queue = queue
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[Any] = []

    def start(
        self, name: str, *, beat: bool = False, concurrency: int = 1
    ) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.support.synthetic_app",
            "worker",
            "--loglevel=INFO",
            f"--hostname={name}@%h",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "--without-mingle",
            "--without-gossip",
        ]
        if beat:
            args += ["--beat", f"--schedule={self.tmp_path / (name + '-beat')}"]
        return self._spawn(name, args, b" ready.")

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        """A separate ``celery beat`` process: the reconciler's clock."""
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.support.synthetic_app",
            "beat",
            "--loglevel=INFO",
            f"--schedule={self.tmp_path / (name + '-schedule')}",
        ]
        return self._spawn(name, args, b"beat: Starting")

    def _spawn(self, name: str, args: list[str], started: bytes) -> subprocess.Popen[bytes]:
        """Start ``args`` in a session of its own, logging to NAME.log; wait for ``started``."""
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        self.files.append(log)
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        wait_until(lambda: started in self.log(name), timeout=60, what=f"{name} started")
        return proc

    def log(self, name: str) -> bytes:
        return (self.tmp_path / f"{name}.log").read_bytes()

    def logs(self) -> str:
        return "\n".join(self.log(n).decode(errors="replace") for n in self.procs)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its pool processes at once."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate(self, name: str) -> None:
        """SIGTERM a worker (a warm shutdown: its running task finishes first) and wait."""
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for file in self.files:
            file.close()

"""The whole topology as local processes: migration, workers, beat, Flower, the admin API.

``make cluster`` runs this against the local Postgres and Redis; it is what
``docker-compose.yml`` runs, without containers::

    python -m providers.demo.cluster --app providers.demo.app --workers 4 --demo-sources

It migrates the database (one shot), starts the processes, waits until each is ready, prints
``cluster ready`` and stays in the foreground; SIGINT or SIGTERM stops every process it started.
A process that exits on its own is restarted, as compose's ``restart: unless-stopped`` does,
after a short backoff (1 s, doubling up to 8 s) while the others keep running. One that exits
more than 5 times in a minute is crash-looping: then everything is stopped and the exit status
is 1. A process that exits before it was first ready stops the start-up the same way.

Secrets are never printed: when ``INGESTION_ADMIN_TOKEN`` or ``FLOWER_BASIC_AUTH`` is not set,
one is generated and written to a file readable by its owner only in the run directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from providers.demo.app import PROVIDERS_ENV, parse_providers

DEFAULT_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:5432/ingestion"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
READY_TIMEOUT = 60.0
#: A process that exits is restarted after RESTART_BACKOFF seconds, doubled for each restart in
#: the last RESTART_WINDOW seconds up to RESTART_BACKOFF_MAX; more than MAX_RESTARTS in that
#: window and the cluster gives up.
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 8.0
RESTART_WINDOW = 60.0
MAX_RESTARTS = 5


class ClusterError(RuntimeError):
    """The cluster could not start; the message names the process and its log."""


@dataclass
class Process:
    """One process of the cluster, its log, and how to tell it is ready."""

    name: str
    args: list[str]
    log: Path
    ready: Callable[[Process], bool]
    popen: subprocess.Popen[bytes] | None = None
    handle: IO[bytes] | None = field(default=None, repr=False)
    restarts: deque[float] = field(default_factory=deque, repr=False)
    restart_at: float | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def _log_says(marker: str) -> Callable[[Process], bool]:
    return lambda process: marker in process.text()


def _http_ok(url: str, *, auth: tuple[str, str] | None = None) -> Callable[[Process], bool]:
    def check(_: Process) -> bool:
        try:
            return httpx.get(url, auth=auth, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _secret_file(path: Path, value: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(value + "\n")


def ensure_database(url: str) -> None:
    """Create the Postgres database of ``url`` if it does not exist (SQLite needs nothing)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": parsed.database},
            ).first()
            if exists is None:
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()


class Cluster:
    """Starts and stops the processes of one local deployment."""

    def __init__(
        self,
        *,
        app: str,
        workers: int,
        run_dir: Path,
        host: str = "127.0.0.1",
        api_port: int = 8000,
        flower_port: int = 5555,
        demo_sources: bool = False,
    ) -> None:
        self.app = app
        self.workers = workers
        self.run_dir = run_dir.resolve()
        self.host = host
        self.api_port = api_port
        self.flower_port = flower_port
        self.demo_sources = demo_sources
        self.processes: list[Process] = []
        self.env = dict(os.environ)

    # -- configuration ----------------------------------------------------------------------

    def configure(self) -> None:
        """Fill in the environment every process shares, generating missing secrets."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = self.env
        env.setdefault("INGESTION_DATABASE_URL", DEFAULT_DATABASE)
        if "INGESTION_BROKER_URL" not in env:
            env.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER)
        env["INGESTION_APP"] = self.app
        env["PYTHONUNBUFFERED"] = "1"
        if not env.get("INGESTION_ADMIN_TOKEN"):
            env["INGESTION_ADMIN_TOKEN"] = secrets.token_urlsafe(32)
            _secret_file(self.run_dir / "admin-token", env["INGESTION_ADMIN_TOKEN"])
        if not env.get("FLOWER_BASIC_AUTH"):
            env["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(24)}"
            _secret_file(self.run_dir / "flower-auth", env["FLOWER_BASIC_AUTH"])

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def flower_url(self) -> str:
        return f"http://{self.host}:{self.flower_port}"

    def plan(self) -> list[Process]:
        """The long-running processes, in the order they start."""
        python = sys.executable
        celery = [python, "-m", "celery", "-A", self.app]
        planned: list[Process] = []
        if self.demo_sources:
            urls = parse_providers(self.env.get(PROVIDERS_ENV, ""))
            if not urls:
                from providers.demo.app import DEFAULT_PROVIDERS

                urls = parse_providers(DEFAULT_PROVIDERS)
            for name, url in urls.items():
                port = str(make_url_port(url))
                planned.append(
                    Process(
                        f"source-{name}",
                        [python, "-m", "providers.demo.app", "serve", "--port", port],
                        self.run_dir / f"source-{name}.log",
                        _log_says("demo source"),
                    )
                )
        for number in range(1, self.workers + 1):
            planned.append(
                Process(
                    f"worker{number}",
                    [
                        *celery,
                        "worker",
                        "--loglevel=INFO",
                        f"--hostname=worker{number}@%h",
                        "--concurrency=1",
                        "--pool=prefork",
                    ],
                    self.run_dir / f"worker{number}.log",
                    _log_says(" ready."),
                )
            )
        planned.append(
            Process(
                "beat",
                [
                    *celery,
                    "beat",
                    "--loglevel=INFO",
                    f"--schedule={self.run_dir / 'beat-schedule'}",
                ],
                self.run_dir / "beat.log",
                _log_says("beat: Starting"),
            )
        )
        user, _, password = self.env["FLOWER_BASIC_AUTH"].split(",")[0].partition(":")
        planned.append(
            Process(
                "flower",
                [*celery, "flower", f"--address={self.host}", f"--port={self.flower_port}"],
                self.run_dir / "flower.log",
                _http_ok(f"{self.flower_url}/api/workers", auth=(user, password)),
            )
        )
        planned.append(
            Process(
                "api",
                [
                    python,
                    "-m",
                    "ingestion.cli",
                    "api",
                    f"--host={self.host}",
                    f"--port={self.api_port}",
                ],
                self.run_dir / "api.log",
                _http_ok(f"{self.api_url}/incremental/health"),
            )
        )
        return planned

    # -- running ----------------------------------------------------------------------------

    def migrate(self) -> None:
        """The one-shot migration, before anything else starts."""
        ensure_database(self.env["INGESTION_DATABASE_URL"])
        log = self.run_dir / "migrate.log"
        with log.open("wb") as handle:
            done = subprocess.run(
                [sys.executable, "-m", "ingestion.cli", "migrate"],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if done.returncode != 0:
            raise ClusterError(f"migration failed (see {log}):\n{log.read_text()[-2000:]}")

    def start(self) -> None:
        """Migrate, then start every process and wait until each is ready."""
        self.configure()
        self.migrate()
        for process in self.plan():
            self._spawn(process)
            self.processes.append(process)
        self._write_pids()
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = list(self.processes)
        while waiting:
            for process in list(waiting):
                self._check_alive(process)
                if process.ready(process):
                    waiting.remove(process)
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise ClusterError(f"not ready after {READY_TIMEOUT:g}s: {names}")
            time.sleep(0.2)

    def _spawn(self, process: Process, *, again: bool = False) -> None:
        """Start ``process`` in a session of its own; a restart appends to its log."""
        if process.handle is not None:
            process.handle.close()
        process.handle = process.log.open("ab" if again else "wb")
        process.popen = subprocess.Popen(
            process.args,
            env=self.env,
            stdout=process.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it stops its pool children
        )

    def _write_pids(self) -> None:
        """``NAME PID`` per line in ``pids``, replaced at once so a reader never sees half."""
        partial = self.run_dir / "pids.partial"
        partial.write_text("".join(f"{p.name} {p.popen.pid}\n" for p in self.processes if p.popen))
        partial.replace(self.run_dir / "pids")

    def _check_alive(self, process: Process) -> None:
        assert process.popen is not None
        code = process.popen.poll()
        if code is not None:
            raise ClusterError(
                f"{process.name} exited with status {code} (log {process.log}):\n{process.tail()}"
            )

    def watch(self) -> None:
        """Restart what exits on its own until told to stop; raise if a process crash-loops."""
        stopping = False

        def on_signal(signum: int, _: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stopping:
            for process in self.processes:
                self._supervise(process, time.monotonic())
            time.sleep(0.2)

    def _supervise(self, process: Process, now: float) -> None:
        """Schedule the restart of ``process`` if it exited; restart it when that is due."""
        assert process.popen is not None
        if process.restart_at is not None:
            if now >= process.restart_at:
                process.restart_at = None
                self._spawn(process, again=True)
                self._write_pids()
                _say(f"{process.name} restarted (pid {process.popen.pid})")
            return
        code = process.popen.poll()
        if code is None:
            return
        while process.restarts and now - process.restarts[0] > RESTART_WINDOW:
            process.restarts.popleft()
        if len(process.restarts) >= MAX_RESTARTS:
            raise ClusterError(
                f"{process.name} exited with status {code} after {len(process.restarts)} "
                f"restarts within {RESTART_WINDOW:g}s; giving up (log {process.log}):\n"
                f"{process.tail()}"
            )
        delay = min(RESTART_BACKOFF * 2 ** len(process.restarts), RESTART_BACKOFF_MAX)
        process.restarts.append(now)
        process.restart_at = now + delay
        _say(
            f"{process.name} exited with status {code} (log {process.log}); restarting it in "
            f"{delay:g}s ({len(process.restarts)} restart(s) in the last {RESTART_WINDOW:g}s)"
        )

    def stop(self) -> None:
        """SIGTERM every process group, newest first; SIGKILL what is left after 20 s."""
        for process in reversed(self.processes):
            if process.popen is not None and process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes:
            if process.popen is None:
                continue
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(timeout=5)
            if process.handle is not None:
                process.handle.close()

    def banner(self) -> str:
        token_file = self.run_dir / "admin-token"
        flower_file = self.run_dir / "flower-auth"
        token = f"token in {token_file}" if token_file.exists() else "INGESTION_ADMIN_TOKEN"
        flower = f"credentials in {flower_file}" if flower_file.exists() else "FLOWER_BASIC_AUTH"
        db = make_url(self.env["INGESTION_DATABASE_URL"]).render_as_string(hide_password=True)
        return "\n".join(
            [
                f"cluster ready: {self.workers} workers, beat, Flower and the API",
                f"  API     {self.api_url}/docs ({token})",
                f"  Flower  {self.flower_url} ({flower})",
                f"  metrics {self.api_url}/metrics",
                f"  database {db}",
                f"  logs    {self.run_dir}",
                "Ctrl-C stops everything.",
            ]
        )


def _say(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def make_url_port(url: str) -> int:
    """The port of an ``http://host:port`` URL."""
    port = httpx.URL(url).port
    if port is None:
        raise ValueError(f"{url!r} has no port")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m providers.demo.cluster",
        description="Run migration, workers, beat, Flower and the admin API as local processes.",
    )
    parser.add_argument("--app", default=os.environ.get("INGESTION_APP", "providers.demo.app"))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--run-dir", type=Path, default=Path(".cluster"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument(
        "--demo-sources", action="store_true", help="also serve the demo app's synthetic sources"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    cluster = Cluster(
        app=args.app,
        workers=args.workers,
        run_dir=args.run_dir,
        host=args.host,
        api_port=args.api_port,
        flower_port=args.flower_port,
        demo_sources=args.demo_sources,
    )
    try:
        cluster.start()
        print(cluster.banner(), flush=True)
        cluster.watch()
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()
    print("cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throwaway servers on free ports of 127.0.0.1: a Postgres cluster and a Redis server.

Both live in a temporary folder, are stopped and restarted at will, and are never the shared
servers (Postgres on 5432, Redis on 6379). Run as root, Postgres runs as the unprivileged
``postgres`` user (``runuser``); otherwise as the current user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import psycopg2
import redis

PG_BIN = Path(os.environ.get("CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("CHAOS_REDIS_SERVER", "/usr/bin/redis-server")
SHARED_PORTS = {5432, 6379, 5672}

ShutdownMode = Literal["smart", "fast", "immediate"]


class WaitTimeout(AssertionError):
    """A condition did not hold within its bound."""


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str
) -> Any:
    """Poll ``predicate`` until it returns something truthy; :class:`WaitTimeout` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1 (never a shared server's)."""
    (port,) = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    """``count`` different ports nothing listens on right now, on 127.0.0.1 (never a shared
    server's): all held while they are chosen, so none is handed out twice."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in SHARED_PORTS:
                ports.append(port)
        return ports


class ThrowawayPostgres:
    """A Postgres cluster made by ``initdb`` in ``folder``: trust auth, its own port.

    ``folder`` must be reachable by ``user`` (e.g. made by ``tempfile.mkdtemp`` in ``/tmp``);
    it is handed over to that user and removed by :meth:`destroy`.
    """

    def __init__(self, folder: Path, user: str = "postgres") -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = free_port()
        self.user = user
        self.as_user = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
        self.admin_dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self.as_user, str(PG_BIN / tool), *args],
            cwd=self.folder,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")

    def init(self) -> None:
        """Create the cluster (fsync off: a throwaway cluster needs no durability on crash)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.folder, self.user, self.user)
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.folder}",
                "-c fsync=off",
                "-c max_connections=200",
            ]
        )
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        wait_until(self.accepts, timeout=30, what=f"postgres on port {self.port}")

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """``pg_ctl stop -m mode``: ``fast`` ends sessions, ``immediate`` is a crash."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, mode: ShutdownMode = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def accepts(self) -> bool:
        """Whether the cluster accepts connections and answers a query."""
        try:
            conn = psycopg2.connect(self.admin_dsn, connect_timeout=2)
        except psycopg2.OperationalError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except psycopg2.Error:
            return False
        finally:
            conn.close()

    def admin(self, sql: str) -> None:
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """An empty database ``name``; its URL."""
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def version(self) -> str:
        out = subprocess.run(
            [str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def destroy(self) -> None:
        """Stop the cluster (as a crash: nothing is worth keeping) and remove its folder."""
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


class ThrowawayRedis:
    """A ``redis-server`` without persistence on a free port of 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self.folder),
        }
        args = [REDIS_SERVER]
        for name, value in options.items():
            args += [f"--{name}", value]
        with open(self.folder / f"redis-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.answers, timeout=15, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        """``SHUTDOWN NOSAVE``: every queue, reserved message and unacked entry is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        client = self.client()
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def version(self) -> str:
        out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True)
        return out.stdout.split(" sha=")[0].strip()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

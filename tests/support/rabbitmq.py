"""A throwaway RabbitMQ node on free ports of 127.0.0.1, for settings the shared node must keep.

The shared node (127.0.0.1:5672) keeps RabbitMQ's defaults, such as a ``consumer_timeout`` of
30 minutes. A test that needs a timeout of seconds starts a node of its own: its own name, ports,
database, logs and configuration in a temporary folder, an empty plugin list, and an Erlang
cookie of its own (``HOME`` is the folder), so that its ``rabbitmqctl`` cannot reach the shared
node at all. ``/etc/rabbitmq`` (which names the shared node and its port) is never read.

The scripts are run from ``/usr/lib/rabbitmq/bin`` rather than through Debian's ``/usr/sbin``
wrapper, which, run as root, switches to the ``rabbitmq`` user and its cookie: the shared
node's. Run this way the node runs as the current user, root or not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from amqp.exceptions import AMQPError
from kombu import Connection
from kombu.exceptions import OperationalError

from chaos.servers import free_ports
from tests.support.waiting import wait_until

RABBITMQ_BIN = Path(os.environ.get("TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))

LOOPBACK_DISTRIBUTION = "-kernel inet_dist_use_interface {127,0,0,1}"

#: The ports ``rabbitmqctl`` itself listens on (RabbitMQ's CLI default): never the node's.
CLI_DIST_PORTS = range(35672, 35683)


def _node_ports() -> tuple[int, int]:
    """Two different ports for the node: AMQP and Erlang distribution."""
    while True:
        amqp, dist = free_ports(2)
        if amqp not in CLI_DIST_PORTS and dist not in CLI_DIST_PORTS:
            return amqp, dist


class ThrowawayRabbitMQ:
    """A RabbitMQ node in ``folder`` whose ``rabbit`` application has ``settings`` (Erlang
    integers, e.g. ``{"consumer_timeout": 4000}``), with its ``guest`` user on 127.0.0.1."""

    def __init__(self, folder: Path, settings: Mapping[str, int]) -> None:
        self.folder = folder
        self.settings = dict(settings)
        self.node = f"rabbit-test-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost"
        self.port, self.dist_port = _node_ports()
        self.log_path = folder / "log" / f"{self.node}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = self._environment()

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _environment(self) -> dict[str, str]:
        f = self.folder
        # Nothing of the caller's RabbitMQ or Erlang settings: they may name the shared node.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                "HOME": str(f),  # where Erlang finds the cookie
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(f / "mnesia"),
                "RABBITMQ_LOG_BASE": str(f / "log"),
                "RABBITMQ_PID_FILE": str(f / "rabbitmq.pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(f / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(f / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(f / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(f / "rabbitmq-env.conf"),
                # Erlang distribution on 127.0.0.1 only, as the node's AMQP listener
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": LOOPBACK_DISTRIBUTION,
                "ERL_EPMD_ADDRESS": "127.0.0.1",  # if this node is the one to start epmd
            }
        )
        return env

    def _write_configuration(self) -> None:
        f = self.folder
        f.mkdir(parents=True, exist_ok=True)
        cookie = f / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex.upper())
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        (f / "enabled_plugins").write_text("[].\n")
        (f / "rabbitmq.conf").write_text("")
        (f / "rabbitmq-env.conf").write_text("")
        terms = ", ".join(f"{{{key}, {value}}}" for key, value in self.settings.items())
        (f / "advanced.config").write_text(f"[{{rabbit, [{terms}]}}].\n")

    def answers(self) -> bool:
        """Whether the node accepts an AMQP connection from ``guest``."""
        try:
            with Connection(self.url(), connect_timeout=2) as conn:
                conn.connect()
            return True
        except (OSError, AMQPError, OperationalError):  # not listening yet, or still booting
            return False

    def start(self, timeout: float = 90) -> None:
        self._write_configuration()
        with open(self.folder / "server.out", "wb") as out:
            self.proc = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                cwd=self.folder,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the script, beam and its helpers: one group to end
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.folder / "server.out").read_text(errors="replace")[-3000:]
                raise AssertionError(f"rabbitmq-server {self.node} exited early:\n{tail}")
            return self.answers()

        wait_until(ready, timeout=timeout, interval=0.2, what=f"RabbitMQ node {self.node}")

    def ctl(self, *args: str, timeout: float = 30) -> str:
        """``rabbitmqctl -n NODE args``: this node only; its output."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def setting(self, key: str) -> str:
        """The value the running node uses for the ``rabbit`` application's ``key``."""
        return self.ctl("eval", f"application:get_env(rabbit, {key}).")

    def consumer_channels(self, queue: str) -> list[str]:
        """The channels (Erlang pids) consuming from ``queue`` now."""
        out = self.ctl("list_consumers", "-q", "--no-table-headers", "queue_name", "channel_pid")
        return [line.split("\t")[1] for line in out.splitlines() if line.split("\t")[0] == queue]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """``rabbitmqctl stop``; the process group is killed if it has not ended in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("stop", timeout=30)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

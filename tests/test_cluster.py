"""End to end: the local topology of ``make cluster`` (migration, three workers, beat, Flower,
the API) ingests two providers, spreads their bursts over the workers, restarts a worker that
was killed, and stops cleanly."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestion.store import Store
from providers.demo.app import demo_ref
from providers.demo.cluster import Cluster, ClusterError, Process
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.paths import ROOT, unique
from tests.support.processes import Service, free_ports
from tests.support.waiting import wait_until

TOKEN = "cluster-admin-token-0f9e8d7c6b5a"
FLOWER_AUTH = ("operator", "cluster-flower-password-1234")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pids(run_dir: Path) -> dict[str, int]:
    """The cluster's ``pids`` file: each process's name and pid."""
    lines = (run_dir / "pids").read_text().splitlines()
    return {name: int(pid) for name, pid in (line.split() for line in lines)}


@pytest.mark.workers
@pytest.mark.timeout(240)
def test_cluster_ingests_two_providers_over_three_workers(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Names of their own: Flower sees every task event on the broker, other tests' too.
    services, libraries = unique("services"), unique("libraries")
    sources = {
        services: SyntheticSource(count=1500, per_page=50, delay=0.04),
        libraries: SyntheticSource(count=900, per_page=50, delay=0.04),
    }
    with SourceServer(sources[services]) as one, SourceServer(sources[libraries]) as two:
        api_port, flower_port = free_ports(2)
        env = dict(os.environ)
        env.update(
            {
                "INGESTION_DATABASE_URL": pg_url,
                "CELERY_BROKER_URL": redis_url,
                "INGESTION_QUEUE": unique("cluster-test"),
                "INGESTION_DEMO_PROVIDERS": f"{services}={one.url},{libraries}={two.url}",
                "INGESTION_RECONCILE_INTERVAL": "1",
                "INGESTION_RESEND_AFTER": "1",
                "INGESTION_ADMIN_TOKEN": TOKEN,
                "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
                "PYTHONPATH": str(ROOT),
            }
        )
        run_dir = tmp_path / "cluster"
        cluster = Service(
            "cluster",
            [
                sys.executable,
                "-m",
                "providers.demo.cluster",
                "--app=providers.demo.app",
                "--workers=3",
                f"--run-dir={run_dir}",
                f"--api-port={api_port}",
                f"--flower-port={flower_port}",
            ],
            env,
            tmp_path,
        )
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        flower = httpx.Client(
            base_url=f"http://127.0.0.1:{flower_port}", auth=FLOWER_AUTH, timeout=30
        )
        pids: dict[str, int] = {}
        try:
            cluster.wait_ready(lambda: "cluster ready" in cluster.log(), timeout=100)
            pids = read_pids(run_dir)
            assert sorted(pids) == ["api", "beat", "flower", "worker1", "worker2", "worker3"]

            # When both providers have completed a cycle (seen through the API)
            def completed() -> bool:
                return all(
                    api.get(f"/incremental/providers/{name}").json()["last_completed_cycle"]
                    for name in sources
                )

            wait_until(completed, timeout=90, interval=0.5, what="a cycle of each provider")

            # Then the catalog equals each source, read through the API a page at a time
            for name, source in sources.items():
                refs: list[str] = []
                after = None
                while True:
                    params: dict[str, Any] = {"provider": name, "limit": 500}
                    if after:
                        params["after"] = after
                    page = api.get("/entities", params=params).json()
                    refs += [e["ref"] for e in page["items"]]
                    after = page["next_after"]
                    if after is None:
                        break
                assert refs == sorted(demo_ref(name, n) for n in source.members())
            assert api.get("/incremental/health").json()["healthy"] is True

            # And the bursts ran on more than one worker, as Flower and the database both show
            workers_seen: set[str] = set()
            for name in sources:
                tasks = flower.get(
                    "/api/tasks", params={"taskname": f"ingestion.burst[{name}]"}
                ).json()
                workers_seen |= {t["worker"].split("@")[0] for t in tasks.values() if t["worker"]}
            assert len(workers_seen) > 1, workers_seen
            store = Store(pg_url)
            hosts = {b["worker"].split("@")[0] for n in sources for b in store.bursts(n)}
            store.dispose()
            assert len(hosts) > 1, hosts

            # And the metrics, read from the database, count what every worker committed
            text = api.get("/metrics").text
            committed = {
                s.labels["provider"]: s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "ingestion_entities_committed_total"
            }
            assert committed == {services: 1500.0, libraries: 900.0}

            # When a worker is killed, the cluster restarts it and keeps the others running
            os.killpg(pids["worker1"], signal.SIGKILL)
            restarted = wait_until(
                lambda: (
                    read_pids(run_dir)["worker1"] != pids["worker1"]
                    and read_pids(run_dir)["worker1"]
                ),
                timeout=30,
                what="worker1 restarted",
            )
            assert alive(restarted) and not alive(pids["worker1"])
            assert "worker1 exited with status -9" in cluster.log()
            # The pids file is written a moment before the restart is logged
            wait_until(lambda: "worker1 restarted" in cluster.log(), timeout=5, what="the log")
            assert {k: v for k, v in read_pids(run_dir).items() if k != "worker1"} == {
                k: v for k, v in pids.items() if k != "worker1"
            }
            wait_until(
                lambda: (run_dir / "worker1.log").read_text(errors="replace").count(" ready.") == 2,
                timeout=60,
                what="the restarted worker1 ready",
            )
            pids = read_pids(run_dir)

            # And a new cycle completes with it
            cycle = api.get(f"/incremental/providers/{services}").json()["last_completed_cycle"]
            assert api.post(f"/incremental/providers/{services}/start").status_code == 200

            def next_cycle() -> bool:
                body = api.get(f"/incremental/providers/{services}").json()
                return bool(body["last_completed_cycle"]["id"] > cycle["id"])

            wait_until(next_cycle, timeout=60, interval=0.5, what="a cycle after the restart")
            assert cluster.proc.poll() is None
        finally:
            api.close()
            flower.close()
            # When the cluster is told to stop, every process it started ends
            os.kill(cluster.proc.pid, signal.SIGTERM)
            code = cluster.proc.wait(timeout=60)
            cluster.stop()
    assert code == 0, cluster.log()[-3000:]
    assert "cluster stopped" in cluster.log()
    for name, pid in pids.items():
        assert not alive(pid), name
    for secret in (TOKEN, FLOWER_AUTH[1]):
        assert secret not in cluster.log()
        for log in run_dir.glob("*.log"):
            assert secret not in log.read_text(errors="replace"), log.name


@pytest.mark.timeout(60)
def test_a_process_is_restarted_with_backoff_and_a_crash_loop_stops_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = Cluster(app="providers.demo.app", workers=1, run_dir=tmp_path)
    flaky = Process(
        "flaky",
        [sys.executable, "-c", "print('up'); raise SystemExit(3)"],
        tmp_path / "flaky.log",
        lambda _: True,
    )
    cluster._spawn(flaky)
    cluster.processes.append(flaky)
    now, delays = 0.0, []
    try:
        with pytest.raises(ClusterError, match="flaky exited with status 3 after 5 restarts"):
            for _ in range(10):
                assert flaky.popen is not None
                flaky.popen.wait(timeout=20)
                cluster._supervise(flaky, now)  # the exit is seen: a restart is scheduled
                assert flaky.restart_at is not None
                delays.append(flaky.restart_at - now)
                cluster._supervise(flaky, flaky.restart_at - 0.1)  # not yet
                assert flaky.popen.poll() is not None
                now = flaky.restart_at
                cluster._supervise(flaky, now)  # restarted
                assert flaky.restart_at is None
    finally:
        cluster.stop()
    assert delays == [1, 2, 4, 8, 8]
    assert flaky.log.read_text().count("up") == 6, "a restart appends to the log"
    err = capsys.readouterr().err
    assert "cluster: flaky exited with status 3" in err and "restarting it in 1s" in err
    assert "cluster: flaky restarted (pid " in err

    # Exits a minute apart are never a crash loop.
    spaced = Process("spaced", flaky.args, tmp_path / "spaced.log", lambda _: True)
    cluster._spawn(spaced)
    cluster.processes = [spaced]
    try:
        for minute in range(8):
            assert spaced.popen is not None
            spaced.popen.wait(timeout=20)
            cluster._supervise(spaced, minute * 61.0)
            assert spaced.restart_at == minute * 61.0 + 1
            cluster._supervise(spaced, spaced.restart_at)
    finally:
        cluster.stop()

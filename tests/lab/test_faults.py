"""Faults injected on the lab, each with the outcome a user relies on: a
scheduler killed with SIGKILL is restarted while the other one keeps
scheduling; the PostgreSQL standby and the Redis replica stopped for a
minute while DAGs run catch up with nothing lost; a highstate cut by a
salt-master restart converges when run again."""

import json
import subprocess
import time

import pytest

from lab import master
from tests.conftest import REPO, assert_converged, bin_lab, highstate, salt_json
from tests.lab.airflow_api import wait_until
from tests.lab.test_data_tier import lsn
from tests.lab.test_failover import run_state, trigger_sleeping_run
from tests.lab.writers import SERVER1, SERVER2, psql, redis_cli

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


def unit(node, name, *properties):
    shown = bin_lab("exec", node, "--", "systemctl", "show", name,
                    *[f"--property={p}" for p in properties]).stdout
    return dict(line.split("=", 1) for line in shown.splitlines())


def test_a_killed_scheduler_is_restarted_while_the_other_keeps_scheduling(airflow_healthy, say):
    before = unit(SERVER1, "airflow-scheduler", "MainPID", "NRestarts")
    bin_lab("exec", SERVER1, "--", "kill", "-9", before["MainPID"])
    run_id = trigger_sleeping_run(0)
    # Queued by the scheduler that still runs (the killed one restarts after
    # RestartSec, 5 s, and starts up for longer than that).
    assert wait_until(lambda: run_state(run_id), 300, "ha_smoke finished") == "success"
    queued_by = psql(SERVER1, "select j.hostname from task_instance t join job j "
                              f"on j.id = t.queued_by_job_id where t.run_id = '{run_id}'").stdout
    after = wait_until(lambda: (lambda u: u if u["ActiveState"] == "active" else None)(
        unit(SERVER1, "airflow-scheduler", "MainPID", "NRestarts", "ActiveState")),
        60, "airflow-scheduler active again on airflow-server1")
    assert after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    say(f"FAULT scheduler SIGKILL on {SERVER1}: restarted by systemd; the run was queued by "
        f"{queued_by.strip()}")


def test_standby_and_replica_stopped_for_a_minute_catch_up_with_nothing_lost(airflow_healthy, say):
    bin_lab("exec", SERVER2, "--", "systemctl", "stop", "postgresql@15-main", "redis-server")
    try:
        runs = [trigger_sleeping_run(0) for _ in range(3)]
        psql(SERVER1, "create table fault_probe (n int primary key, at timestamptz default now())")
        written = 0
        stopped_until = time.monotonic() + 60
        while time.monotonic() < stopped_until:
            written += 1
            psql(SERVER1, f"insert into fault_probe (n) values ({written})")
            redis_cli(SERVER1, "rpush", "fault_probe", str(written))
            time.sleep(1)
        for run_id in runs:
            assert wait_until(lambda: run_state(run_id), 300, "a run while the standby was down") \
                == "success"
        primary_lsn = psql(SERVER1, "select pg_current_wal_lsn()").stdout.strip()
    finally:
        bin_lab("exec", SERVER2, "--", "systemctl", "start", "postgresql@15-main", "redis-server")
    started = time.monotonic()

    def caught_up():
        standby = salt_json(SERVER2, "pg_replication.status")[SERVER2]
        replica = salt_json(SERVER2, "redis_replication.status")[SERVER2]
        received = standby.get("received_lsn")
        return (received and lsn(received) >= lsn(primary_lsn)
                and replica.get("master_link_status") == "up" and replica.get("lag_bytes") == 0)

    wait_until(caught_up, 120, "the standby and the replica caught up", interval=1)
    say(f"FAULT standby and replica stopped 60 s: caught up {time.monotonic() - started:.1f} s "
        f"after their start ({written} rows and items written meanwhile)")
    items = redis_cli(SERVER2, "lrange", "fault_probe", "0", "-1").split()
    assert [int(n) for n in items] == list(range(1, written + 1))
    status = json.loads(subprocess.run([str(REPO / ".venv/bin/salt-run"), "airflow_ha.status",
                                        "--out=json"], cwd=REPO, capture_output=True,
                                       text=True).stdout)
    assert status["problems"] == []


def repaired_without_restarts(node):
    """A Salt-managed file of the node whose repair restarts no service:
    HAProxy's configuration (a reload), or the Airflow version's pip
    constraints."""
    if node == "airflow-lb1":
        return "/etc/haproxy/haproxy.cfg"
    venv = bin_lab("exec", node, "--", "readlink", "/opt/airflow/venv").stdout.strip()
    return f"/opt/airflow/constraints-{venv.rsplit('/', 1)[-1]}.txt"


def test_a_highstate_cut_by_a_master_restart_converges_when_run_again(lab, say):
    # Give the highstate something to do on every node: a Salt-managed file.
    damaged = {node: repaired_without_restarts(node) for node in lab}
    for node, path in damaged.items():
        bin_lab("exec", node, "--", "sh", "-c", f"echo '# stale' >> {path}")
    cut_run = subprocess.Popen([str(REPO / ".venv/bin/salt"), "*", "state.apply"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    master.stop()
    master.start()
    cut_run.kill()  # the operator's CLI lost its master too
    cut_run.wait()
    master.wait_for_minions(list(lab))
    # The minions finish the cut run on their own; then a new one converges.
    wait_until(lambda: all(jobs == [] for jobs in salt_json("*", "saltutil.running").values()),
               600, "the interrupted highstate finished on every node", interval=3)
    # A highstate that restarts every Airflow 3 unit outlasts the CLI's default wait.
    rerun = highstate("*")
    assert set(rerun) == set(lab)
    for node, states in rerun.items():
        assert isinstance(states, dict), f"{node} did not render: {states}"
        assert all(state["result"] is True for state in states.values()), node
    assert_converged(highstate("*"))
    for node, path in damaged.items():
        assert "# stale" not in bin_lab("exec", node, "--", "cat", path).stdout
    say("FAULT salt-master restarted 3 s into a highstate: the re-run converged")

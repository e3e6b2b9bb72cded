"""orch.failover and orch.failback on the lab, as an operator runs them from
the repository root: a dry run that changes nothing, a planned failover
under load that loses nothing, a highstate that keeps the new topology, a
planned failback, and an unplanned failover of a crashed primary with its
fencing and rejoin by pg_rewind. Benchmarks are printed, not asserted."""

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, assert_converged, bin_lab, highstate, salt_json
from tests.lab.airflow_api import Api, health, healthy, wait_until
from tests.lab.test_guard_rails import ProcessWatch, leaked, secret_values
from tests.lab.writers import (SECRETS, SERVER1, SERVER2, WORKER,
                               ServersWatch, Writer, assert_nothing_lost, orchestrate, psql,
                               redis_cli, salt_run_json, writable)

pytestmark = pytest.mark.lab

ADMIN = ("admin", SECRETS["airflow"]["admin"]["password"])


def topology():
    """Roles, timelines, fencing and Redis replication ids of both servers, and
    the topology record: what a dry run must leave exactly as it was."""
    status = salt_run_json("airflow_ha.status")
    nodes = {}
    for node, states in status["nodes"].items():
        pg, rds = states["postgresql"], states["redis"]
        nodes[node] = (pg["role"], pg["timeline"], pg["fenced"], rds["role"], rds["master_replid"])
    return nodes, status["record"]


def trigger_sleeping_run(seconds):
    return Api(ADMIN).trigger("ha_smoke", {"sleep_seconds": seconds})


def task_state(run_id):
    return Api(ADMIN).task_state("ha_smoke", run_id, "worker_hostname")


def run_state(run_id):
    return Api(ADMIN).run_state("ha_smoke", run_id)


class HealthWatch(threading.Thread):
    """Asks Airflow's health through HAProxy five times a second until
    stopped, as a user's client would: keeps when it was healthy (with the
    scheduler heartbeat it reported), and counts the requests that failed
    (no answer, or no health answer from Airflow)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.polls, self.failed, self.stopped = [], 0, 0, False

    def run(self):
        while not self.stopped:
            self.polls += 1
            try:
                body = health(timeout=3)
            except (requests.RequestException, ValueError):
                self.failed += 1
            else:
                try:
                    if healthy(body):
                        beat = _epoch(body["scheduler"]["latest_scheduler_heartbeat"])
                        self.samples.append((time.time(), beat))
                except (ValueError, KeyError, TypeError):
                    pass
            time.sleep(0.2)

    def healthy_after(self, moment):
        """When Airflow was first healthy with a scheduler heartbeat later
        than moment (a scheduler working on the new primary)."""
        self.stopped = True
        self.join(timeout=30)
        return next((at for at, beat in self.samples if beat > moment), None)

    def failures(self):
        return f"{self.failed} of {self.polls} UI requests failed (5 per second)"


def _epoch(timestamp):
    from datetime import datetime

    return datetime.fromisoformat(timestamp).timestamp()


def failback_with_consent(say, switch_back=True):
    """Run orch.failback (with switch_back false: rejoin the former primary
    as the standby, and leave the roles as they are); when it refuses to
    discard WAL the old primary holds past the fork, check that it said
    which range and how to consent, run the command it names, and check
    that the copy was kept. Returns the output of the run that succeeded."""
    pillar = [] if switch_back else ['pillar={"switch_back": false}']
    returncode, output = orchestrate(say, "orch.failback", *pillar)
    if returncode != 0:
        named = re.search(r"orch\.failback pillar='(\{[^']*\})'", output)
        assert named and "would discard" in output, output
        consent = json.loads(named.group(1))
        assert consent.get("switch_back", True) == switch_back, output
        say(f"failback asked to discard {consent['discard']}; consenting")
        returncode, output = orchestrate(say, "orch.failback", f"pillar={named.group(1)}")
        assert returncode == 0, output
        assert f"discarded {consent['discard']}" in output and "kept in /" in output, output
    return output


# -- no destruction: status and dry runs ----------------------------------------


def test_status_runner_prints_one_table_and_json(airflow_healthy):
    result = subprocess.run([str(REPO / ".venv/bin/salt-run"), "airflow_ha.status"], cwd=REPO,
                            capture_output=True, text=True)
    print(result.stdout)
    assert re.search(rf"^{SERVER1}\s+primary\s+\d+\s+-\s+master\s+\d+", result.stdout, re.M)
    assert re.search(rf"^{SERVER2}\s+standby \(streaming\)\s+\d+\s+\d+\s+replica \(up\)",
                     result.stdout, re.M)
    assert "topology record:" in result.stdout and "healthy" in result.stdout
    nodes, record = topology()
    assert nodes[SERVER1][0] == "primary" and nodes[SERVER2][0] == "standby"


@pytest.mark.parametrize("runbook", ["orch.failover", "orch.failback"])
def test_a_dry_run_prints_the_plan_and_changes_nothing(airflow_healthy, runbook, say):
    before = topology()
    returncode, output = orchestrate(say, runbook, "test=True")
    assert returncode == 0, output
    assert "==> pre-flight" in output
    assert "would be executed" in output
    assert "==> verify" not in output  # no step ran
    assert topology() == before


def test_a_runbook_refuses_a_pillar_the_highstate_would_refuse(airflow_healthy, say):
    record = topology()[1]
    path = Path(json.loads(subprocess.run(
        [str(REPO / ".venv/bin/salt-run"), "airflow_ha.topology", "--out=json"], cwd=REPO,
        capture_output=True, text=True).stdout)["path"])
    before = topology()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"primary": WORKER, "recorded_at": "now", "reason": "corrupted"}))
    try:
        returncode, output = orchestrate(say, "orch.failover")
    finally:
        if record is None:
            path.unlink()
        else:
            path.write_text(json.dumps(record))
    assert returncode != 0
    assert "the pillar is invalid: the pillar of environment lab has 1 problem(s)" in output
    assert f"topology:primary names {WORKER}" in output
    assert topology() == before


# -- destructive: failovers ---------------------------------------------------------
# The backups follow the failovers: marks written on each timeline, restored at the end.

BACKUP_NODE = "airflow-lb1"


def mark(primary, name):
    """A row and a restore point of that name on the primary, archived."""
    psql(primary, f"CREATE TABLE IF NOT EXISTS dr_failover (mark text); "
                  f"INSERT INTO dr_failover VALUES ('{name}')")
    assert salt_run_json("airflow_ha.restore_point", name)["name"] == name
    assert salt_json("--timeout=600", BACKUP_NODE, "pg_backup.check")[BACKUP_NODE]["ok"] is True


@pytest.mark.destructive
def test_a_mark_before_the_failovers(lab):
    psql(SERVER1, "DROP TABLE IF EXISTS dr_failover")
    mark(SERVER1, "before-failovers")


def worker_pid():
    """The main process of the Celery worker on the worker node."""
    return bin_lab("exec", WORKER, "--", "systemctl", "show", "-P", "MainPID",
                   "airflow-worker").stdout.strip()


@pytest.mark.destructive
def test_planned_failover_under_load_loses_nothing(lab, airflow_healthy, say):
    run_id = trigger_sleeping_run(75)
    wait_until(lambda: task_state(run_id) == "running", 180, "the sleeping task running")
    writer = Writer(lab)
    writer.wait_flowing(SERVER1)
    time.sleep(3)
    worker_before = worker_pid()

    started = time.time()
    health = HealthWatch()
    health.start()
    processes = ProcessWatch(lab)
    processes.start()
    try:
        returncode, output = orchestrate(say, "orch.failover", "-l", "debug")
        whole_run = time.time() - started
    finally:
        command_lines = processes.stop()
    assert returncode == 0, output
    assert leaked(output, secret_values()) == [], "in the failover's output (debug)"
    assert leaked(command_lines, secret_values()) == [], "on a command line during the failover"
    time.sleep(3)  # writes keep flowing to the new primaries
    acknowledged = writer.stop()

    pg_acked, redis_acked = assert_nothing_lost(writer, acknowledged, SERVER2)
    # The writer really wrote through the switch, to both servers.
    for kind in ("postgresql", "redis"):
        servers = {server for _, server, _ in acknowledged[kind]}
        assert servers == {lab[SERVER1], lab[SERVER2]}, f"{kind} acknowledged by {servers}"

    # The old primary follows the new one, for both.
    assert psql(SERVER2, "select application_name, state from pg_stat_replication"
                ).stdout.strip() == f"{SERVER1}|streaming"
    replica = redis_cli(SERVER1, "info", "replication")
    assert f"master_host:{lab[SERVER2]}" in replica and "master_link_status:up" in replica

    # The Celery worker ran on through the switch: its broker connection was
    # cut before the Redis master turned replica, and it reconnected.
    assert worker_pid() == worker_before
    # The run that slept through the switch, and a new one, succeed.
    assert wait_until(lambda: run_state(run_id), 300, "the sleeping run finished") == "success"
    smoke = trigger_sleeping_run(0)
    assert wait_until(lambda: run_state(smoke), 300, "ha_smoke finished") == "success"

    first_new = min(at for _, server, at in acknowledged["postgresql"] if server == lab[SERVER2])
    healthy_at = health.healthy_after(first_new)
    say(f"BENCHMARK planned failover (salt-run -l debug, under load): new primary accepted "
        f"writes {first_new - started:.1f} s after the command (target 3, before 8), Airflow "
        f"healthy through HAProxy after {(healthy_at or float('nan')) - started:.1f} s "
        f"(target 10, before 19); {health.failures()} (target 0); whole run, the pair "
        f"redundant again, {whole_run:.1f} s (target 20, before 36); "
        f"{len(pg_acked)} rows and {len(redis_acked)} Redis items acknowledged, none lost")
    assert healthy_at is not None


@pytest.mark.destructive
def test_a_highstate_after_the_failover_keeps_the_new_topology(lab):
    before = topology()
    assert before[0][SERVER2][0] == "primary" and before[1]["primary"] == SERVER2
    results = highstate("*")
    assert set(results) == set(lab)
    assert_converged(results)
    assert topology() == before


@pytest.mark.destructive
def test_archiving_and_backups_go_on_after_the_planned_failover(lab, say):
    mark(SERVER2, "after-planned-failover")
    returncode, output = orchestrate(say, "orch.backup")
    assert returncode == 0, output


@pytest.mark.destructive
def test_planned_failback_switches_back_to_the_preferred_primary(lab, say):
    returncode, output = orchestrate(say, "orch.failback")
    assert returncode == 0, output
    nodes, record = topology()
    assert record["primary"] == SERVER1
    assert nodes[SERVER1][0] == "primary" and nodes[SERVER2][0] == "standby"
    assert nodes[SERVER1][3] == "master" and nodes[SERVER2][3] == "replica"


@pytest.mark.destructive
def test_unplanned_failover_fences_the_crashed_primary_and_the_rejoin_rewinds_it(lab, say):
    run_id = trigger_sleeping_run(60)
    wait_until(lambda: task_state(run_id) == "running", 180, "the sleeping task running")
    watch = ServersWatch()
    watch.start()
    try:
        bin_lab("crash", SERVER1)

        returncode, output = orchestrate(say, "orch.failover")
        assert returncode != 0
        assert "refused" in output and '"force": true' in output and "0/" in output, output
        assert not writable(SERVER2)

        started = time.time()
        health = HealthWatch()
        health.start()
        returncode, output = orchestrate(say, "orch.failover", 'pillar={"force": true}')
        whole_run = time.time() - started
        assert returncode == 0, output
        assert writable(SERVER2)
        healthy_at = health.healthy_after(watch.first_writable[SERVER2])
        # The task that slept on the worker through the crash and the switch.
        task_ended = wait_until(lambda: run_state(run_id), 300, "the sleeping run finished")
        say(f"BENCHMARK unplanned failover (forced): new primary accepted writes "
            f"{watch.first_writable[SERVER2] - started:.1f} s after the command (target 5, "
            f"before 17.1), Airflow healthy through HAProxy after "
            f"{(healthy_at or float('nan')) - started:.1f} s (target 15, before 32.0); "
            f"{health.failures()} (target 25 at most: 5 s); whole run {whole_run:.1f} s "
            f"(before 109-165, its Airflow step alone 42); the task running across the "
            f"switch ended in {task_ended}")
        assert healthy_at is not None
        assert task_ended == "success"

        bin_lab("start", SERVER1)
        status = salt_json(SERVER1, "pg_replication.status")[SERVER1]
        assert status["running"] and status["role"] == "standby" and status["fenced"], status
        assert not writable(SERVER1)

        # It rejoins as the standby; the roles stay (the safety scenarios
        # after this module start from either server).
        output = failback_with_consent(say, switch_back=False)
        rejoin = re.search(r"rejoin PostgreSQL on airflow-server1.*\n.*method (\w+), rejoin "
                           r"([\d.]+) s", output)
        assert rejoin and rejoin.group(1) in ("none", "rewind"), output
        say(f"BENCHMARK failback: {SERVER1} rejoined by {rejoin.group(1)} in "
            f"{rejoin.group(2)} s")
        assert writable(SERVER2) and not writable(SERVER1)
        assert psql(SERVER2, "select application_name, state from pg_stat_replication"
                    ).stdout.strip() == f"{SERVER1}|streaming"
    finally:
        watch.stop()
    watch.assert_never_two_writers(say)
    assert watch.polls > 50




@pytest.mark.destructive
def test_restores_reach_every_point_across_the_failovers(lab, say):
    """Three timelines later (planned failover, failback, forced failover):
    the archive has no gap, a restore reaches the point before them all and
    the end of the archive, through the backup taken after the planned one."""
    mark(SERVER2, "after-forced-failover")
    for target, marks in ((("restore_point", "before-failovers"), "before-failovers"),
                          (("restore_point", "after-planned-failover"),
                           "after-planned-failover,before-failovers"),
                          (None, "after-forced-failover,after-planned-failover,before-failovers")):
        pillar = [f"pillar={json.dumps(dict([target]))}"] if target else []
        returncode, output = orchestrate(say, "orch.restore", *pillar)
        assert returncode == 0, output
        node = re.search(r"node (airflow-server\d)", output).group(1)
        restored = salt_json("--timeout=600", node, "pg_backup.restored_sql",
                             "SELECT string_agg(mark, ',' ORDER BY mark) FROM dr_failover",
                             "database=airflow")[node]
        assert restored == marks, (target, output)
        directory = re.search(r"directory (/\S+),", output).group(1)
        salt_json("--timeout=600", node, "pg_backup.drop_restored", directory)

"""Failover safety under faults, on the lab: start guards that fail closed
(a node cut off from its peer starts fenced; a rebooted primary beside its
warm standby comes back without help) and both servers down after a forced
failover, booted in either order. Throughout, both servers are polled:
never two writable PostgreSQL primaries, never two Redis masters."""

import json
import subprocess
import threading
import time

import pytest

from tests.conftest import REPO, bin_lab, salt_json
from tests.lab.test_airflow_tier import wait_until
from tests.lab.test_failover import (SERVER1, SERVER2, failback_with_consent, orchestrate,
                                     redis_cli, writable)

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


def redis_master(node):
    """Whether Redis on node is a master now (False when it does not answer)."""
    try:
        return redis_cli(node, "ROLE").split("\n", 1)[0].strip() == "master"
    except AssertionError:
        return False


class WriterWatch(threading.Thread):
    """Polls both servers until stopped; keeps every moment with two
    writable PostgreSQL primaries or two Redis masters."""

    def __init__(self):
        super().__init__(daemon=True)
        self.two_primaries, self.two_masters, self.polls, self.stopped = [], [], 0, False

    def run(self):
        while not self.stopped:
            now = time.time()
            if all(writable(node) for node in (SERVER1, SERVER2)):
                self.two_primaries.append(now)
            if all(redis_master(node) for node in (SERVER1, SERVER2)):
                self.two_masters.append(now)
            self.polls += 1
            time.sleep(0.3)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopped = True
        self.join(timeout=60)


def salt_run(*args):
    result = subprocess.run([str(REPO / ".venv/bin/salt-run"), *args], cwd=REPO,
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def pg_status(node):
    return salt_json(node, "pg_replication.status")[node]


def assert_one_writer(watch, say, primary):
    say(f"{watch.polls} polls of both servers: {len(watch.two_primaries)} with two writable "
        f"PostgreSQL primaries, {len(watch.two_masters)} with two Redis masters")
    assert watch.polls > 5  # each poll asks four servers through bin/lab exec: seconds
    assert watch.two_primaries == [] and watch.two_masters == []
    assert writable(primary) and redis_master(primary)


def fail_over_then_lose_both(say):
    """The primary crashes, a forced failover promotes the other server,
    then that one crashes too: both down, the stale one's record older."""
    bin_lab("crash", SERVER1)
    returncode, output = orchestrate(say, "orch.failover", 'pillar={"force": true}')
    assert returncode == 0, output
    bin_lab("crash", SERVER2)


def restart(node, unit):
    return bin_lab("exec", node, "--", "systemctl", "restart", unit, check=False)


def test_a_rebooted_primary_beside_its_warm_standby_comes_back_as_primary(lab, say):
    """The standby answers no SQL (warm), but its peer report says it runs
    in recovery with the same record: positive evidence, no operator."""
    with WriterWatch() as watch:
        bin_lab("crash", SERVER1)
        bin_lab("start", SERVER1)
        wait_until(lambda: writable(SERVER1), 120, f"{SERVER1} writable again")
        wait_until(lambda: redis_master(SERVER1), 60, f"Redis on {SERVER1} master again")
    assert not pg_status(SERVER1)["fenced"]
    assert_one_writer(watch, say, SERVER1)


def test_a_primary_cut_off_from_its_peer_restarts_fenced_until_unfenced(lab, say):
    with WriterWatch() as watch:
        bin_lab("isolate", SERVER1, "--from", SERVER2)
        try:
            restart(SERVER1, "postgresql@15-main")
            restart(SERVER1, "redis-server")
            state = pg_status(SERVER1)
            assert state["role"] == "standby" and state["fenced"], state
            assert state["fence"]["reason"].startswith("start guard:")
            assert f"{SERVER2} does not report" in state["fence"]["reason"]
            assert not writable(SERVER1) and not redis_master(SERVER1)
            journal = bin_lab("exec", SERVER1, "--", "journalctl", "-u", "postgresql@15-main",
                              "-n", "30", "--no-pager").stdout
            assert "salt-run airflow_ha.unfence" in journal
            returncode, status = salt_run("airflow_ha.status")
            assert "fenced by its start guard" in status and "airflow_ha.unfence" in status
        finally:
            bin_lab("heal", SERVER1)
        returncode, output = salt_run("airflow_ha.unfence")
        say(output.strip().splitlines()[-1])
        assert returncode == 0, output
        wait_until(lambda: writable(SERVER1), 60, f"{SERVER1} writable after unfence")
        # Its standby lost its primary meanwhile: it streams again by itself.
        returncode, status = salt_run("airflow_ha.status")
    assert_one_writer(watch, say, SERVER1)


def test_both_servers_down_after_a_forced_failover_stale_one_first(lab, say):
    """The stale former primary boots first: its peer is down, so it starts
    fenced. The newer primary boots next: its peer reports recovery and an
    older record, so it starts as the primary, without help."""
    with WriterWatch() as watch:
        fail_over_then_lose_both(say)
        bin_lab("start", SERVER1)
        state = pg_status(SERVER1)
        assert state["fenced"] and state["role"] == "standby", state
        assert not writable(SERVER1) and not redis_master(SERVER1)
        bin_lab("start", SERVER2)
        wait_until(lambda: writable(SERVER2), 120, f"{SERVER2} writable")
        wait_until(lambda: redis_master(SERVER2), 60, f"Redis on {SERVER2} master")
        assert not writable(SERVER1)
    assert_one_writer(watch, say, SERVER2)
    failback_with_consent(say)
    assert writable(SERVER1) and not writable(SERVER2)


def test_both_servers_down_newer_one_first_waits_for_unfence(lab, say):
    """The newer primary boots first with its peer down: it cannot prove it
    is the writer and starts fenced; the stale one follows and finds a newer
    record. Nobody writes until the operator runs unfence, which picks the
    writer by generation, not by boot order."""
    with WriterWatch() as watch:
        fail_over_then_lose_both(say)
        bin_lab("start", SERVER2)
        bin_lab("start", SERVER1)
        for node in (SERVER1, SERVER2):
            state = pg_status(node)
            assert state["fenced"] and state["role"] == "standby", (node, state)
        assert not writable(SERVER1) and not writable(SERVER2)
        returncode, output = salt_run("airflow_ha.unfence", SERVER1)
        assert returncode != 0 and f"{SERVER1} is not the writer" in output, output
        returncode, output = salt_run("airflow_ha.unfence")
        assert returncode == 0, output
        wait_until(lambda: writable(SERVER2), 60, f"{SERVER2} writable after unfence")
    assert_one_writer(watch, say, SERVER2)
    failback_with_consent(say)
    assert writable(SERVER1) and not writable(SERVER2)
    record = json.loads(salt_run("airflow_ha.topology", "--out=json")[1].splitlines()[-1])
    assert record["record"]["primary"] == SERVER1

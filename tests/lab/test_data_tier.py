"""PostgreSQL and Redis replication on the lab, as the highstate leaves them:
airflow-server1 primary and master, airflow-server2 streaming from it."""

import json
import subprocess
import time

import pytest

# lsn: test_faults.py imports it from here too.
from ha_core.pg_facts import parse_lsn as lsn
from tests.conftest import REPO, bin_lab, salt_json
from tests.lab.writers import redis_cli

pytestmark = pytest.mark.lab

PRIMARY, STANDBY = "airflow-server1", "airflow-server2"


def psql(node, sql):
    """Run SQL on a node as the postgres OS user, with psql itself."""
    return bin_lab("exec", node, "--", "runuser", "-u", "postgres", "--",
                   "psql", "-XAtq", "-c", sql).stdout.strip()


def redis_info(node):
    info = redis_cli(node, "info", "replication")
    return dict(line.split(":", 1) for line in info.split() if ":" in line)


def test_primary_streams_to_the_standby_seen_with_psql(lab):
    rows = psql(PRIMARY, "select application_name, state from pg_stat_replication")
    assert rows == f"{STANDBY}|streaming"
    assert psql(PRIMARY, "select pg_is_in_recovery()") == "f"


def test_the_warm_standby_refuses_queries(lab):
    result = bin_lab("exec", STANDBY, "--", "runuser", "-u", "postgres", "--",
                     "psql", "-XAtq", "-c", "select 1", check=False)
    assert result.returncode != 0
    assert "the database system is not accepting connections" in result.stderr or \
        "not yet accepting connections" in result.stderr, result.stderr


def test_redis_replica_follows_the_master(lab):
    # The first sync starts up to repl-diskless-sync-delay (5 s) after the
    # replica connects, which may be just before the highstate returned.
    deadline = time.monotonic() + 30
    while redis_info(STANDBY).get("master_link_status") != "up" and time.monotonic() < deadline:
        time.sleep(0.5)
    replica = redis_info(STANDBY)
    assert replica["role"] == "slave"
    assert replica["master_host"] == lab[PRIMARY]
    assert replica["master_link_status"] == "up"
    assert redis_info(PRIMARY)["connected_slaves"] == "1"


def test_module_status_is_one_json_line_per_node(lab):
    for function in ("pg_replication.status", "redis_replication.status"):
        result = subprocess.run([str(REPO / ".venv/bin/salt"), "airflow-server*", function, "--out=json"],
                                cwd=REPO, capture_output=True, text=True)
        lines = result.stdout.strip().splitlines()
        replies = {}
        for line in lines:
            replies.update(json.loads(line))
        assert set(replies) == {PRIMARY, STANDBY}, result.stdout
        print(function, result.stdout)
    pg = salt_json("airflow-server*", "pg_replication.status")
    assert pg[PRIMARY]["role"] == "primary" and pg[STANDBY]["role"] == "standby"
    # A standby follows the primary's address, as a Redis replica does.
    assert pg[STANDBY]["standby_of"]["host"] == lab[PRIMARY]
    assert [s["state"] for s in pg[PRIMARY]["standbys"]] == ["streaming"]


def test_a_commit_reaches_the_standby_within_seconds(lab):
    commit_lsn = psql(PRIMARY, "create table if not exists lag_probe (at timestamptz);"
                               " insert into lag_probe values (now());"
                               " select pg_current_wal_lsn()").splitlines()[-1]
    started = time.monotonic()
    while True:
        status = salt_json(STANDBY, "pg_replication.status")[STANDBY]
        received = status.get("received_lsn")
        if received and lsn(received) >= lsn(commit_lsn):
            break
        assert time.monotonic() - started < 10, f"standby at {received}, commit at {commit_lsn}"
        time.sleep(0.2)
    print(f"commit {commit_lsn} received by the standby after {time.monotonic() - started:.2f} s "
          "(including a salt round trip)")

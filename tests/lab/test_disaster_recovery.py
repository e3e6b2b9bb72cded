"""Disaster recovery on the lab: both database servers lose their data
(crashed, then their data directories wiped, as replaced disks would
leave them); orch.disaster_recovery restores the preferred primary from
the pgBackRest repository on airflow-lb1, rebuilds the other as its
standby and brings Airflow back. Every DAG run recorded before the last
archived WAL is there, and no moment of the run has two writers. It runs
after every other destructive test."""

import time

import pytest

from tests.conftest import bin_lab, salt_json
from tests.lab.airflow_api import Api, wait_until
from tests.lab.writers import (SECRETS, SERVER1, SERVER2, ServersWatch, orchestrate, psql,
                               salt_run_json, writable)

pytestmark = [pytest.mark.lab, pytest.mark.wipes_servers]

REPOSITORY = "airflow-lb1"
DATA_DIR = "/var/lib/postgresql/15/main"
SERVICE = "postgresql@15-main"
ADMIN = ("admin", SECRETS["airflow"]["admin"]["password"])


def dag_runs(node):
    return psql(node, "SELECT run_id FROM dag_run ORDER BY run_id").stdout.split()


def test_a_disaster_recovery_beside_a_running_primary_is_refused(lab, say):
    returncode, output = orchestrate(say, "orch.disaster_recovery")
    assert returncode != 0, output
    assert "runs as a primary: the cluster is not lost" in output, output


def test_both_servers_lost_are_restored_from_the_backups_with_every_archived_dag_run(lab, say):
    primary = SERVER1 if writable(SERVER1) else SERVER2
    run_id = Api(ADMIN).trigger("ha_smoke", {"sleep_seconds": 0})
    assert wait_until(lambda: Api(ADMIN).run_state("ha_smoke", run_id), 180,
                      "the DAG run") == "success"
    recorded = dag_runs(primary)
    assert run_id in recorded
    # pgBackRest's check switches to a new WAL segment and waits until it is archived.
    assert salt_json("--timeout=600", REPOSITORY, "pg_backup.check")[REPOSITORY]["ok"] is True

    for node in (SERVER1, SERVER2):
        bin_lab("crash", node)
    for node in (SERVER1, SERVER2):
        bin_lab("start", node)
    wait_until(lambda: all(salt_json(node, "test.ping").get(node) is True
                           for node in (SERVER1, SERVER2)), 180, "both minions answering", interval=2)
    for node in (SERVER1, SERVER2):
        bin_lab("exec", node, "--", "systemctl", "stop", SERVICE)
        bin_lab("exec", node, "--", "sh", "-c", f"rm -rf {DATA_DIR} && install -d -o postgres "
                                                f"-g postgres -m 0700 {DATA_DIR}")
    say("both servers crashed, their data directories wiped")

    watch = ServersWatch()  # never two writers while the pair is rebuilt
    watch.start()
    started = time.monotonic()
    returncode, output = orchestrate(say, "orch.disaster_recovery")
    elapsed = time.monotonic() - started
    watch.stop()
    assert returncode == 0, output
    say(f"BENCHMARK disaster recovery: both servers restored and Airflow healthy in {elapsed:.1f} s")
    watch.assert_never_two_writers(say)
    assert f"restore PostgreSQL on {SERVER1}" in output  # the preferred primary
    assert writable(SERVER1) and not writable(SERVER2)
    assert set(recorded) <= set(dag_runs(SERVER1))
    status = salt_run_json("airflow_ha.status")
    assert status["problems"] == [], status["problems"]
    assert status["nodes"][SERVER2]["postgresql"]["role"] == "standby"
    # Airflow works on the restored database: a new run succeeds.
    run_id = Api(ADMIN).trigger("ha_smoke", {"sleep_seconds": 0})
    assert wait_until(lambda: Api(ADMIN).run_state("ha_smoke", run_id), 300,
                      "a DAG run after the recovery") == "success"

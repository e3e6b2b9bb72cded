"""orch.upgrade on the lab: it comes up on Airflow 2.10.5 (this module is
the first of the lab tests), runs DAGs, and is upgraded to the state tree's
Airflow 3 as an operator does it: the pillar's version changed, a dry run,
then the runbook. Every later lab test runs on the upgraded lab (a failover
on it among them); orch.upgrade_rollback is the last destructive test
(test_upgrade_rollback.py). Downtime and db migrate time are printed."""

import re
import threading
import time

import pytest
import requests

from tests.conftest import REPO, pin_airflow_version
from tests.lab.airflow_api import Api, health, healthy, release_line, wait_until
from tests.lab.writers import SECRETS, ServersWatch, orchestrate

pytestmark = [pytest.mark.lab, pytest.mark.lab_first(airflow_version="2.10.5")]

ADMIN = ("admin", SECRETS["airflow"]["admin"]["password"])
DAGS = REPO / "salt" / "airflow" / "dags"
# What orch.upgrade_rollback must find again: runs made on 2.10.5.
BEFORE_UPGRADE = {}


class DowntimeWatch(threading.Thread):
    """Asks for Airflow's health through the load balancer 5 times a
    second until stopped; keeps how long it was not healthy, in total and
    at most at a stretch."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped, self.failures, self.longest = False, 0, 0.0

    def run(self):
        down_since = None
        while not self.stopped:
            try:
                up = healthy(health(timeout=2))
            except (requests.RequestException, ValueError):
                up = False
            now = time.monotonic()
            if up:
                if down_since is not None:
                    self.longest = max(self.longest, now - down_since)
                down_since = None
            else:
                self.failures += 1
                down_since = down_since or now
            time.sleep(0.2)

    def stop(self):
        self.stopped = True
        self.join(timeout=30)
        return self.longest


def run_watching_downtime(say, runbook):
    """Run the orchestration ``runbook`` while a DowntimeWatch polls, and
    both servers are polled for two writers (there must never be); its
    exit status, output, seconds, and the longest stretch Airflow was
    unhealthy through the load balancer."""
    watch, writers = DowntimeWatch(), ServersWatch()
    watch.start()
    writers.start()
    started = time.monotonic()
    returncode, output = orchestrate(say, runbook)
    seconds = time.monotonic() - started
    writers.stop()
    writers.assert_never_two_writers(say)
    return returncode, output, seconds, watch.stop()


def successful_run(api, conf=None):
    """Trigger ha_smoke, wait for its end; its run id (the run succeeded)."""
    wait_until(lambda: api.get("/dags/ha_smoke").ok, 180, "ha_smoke parsed")
    run_id = api.trigger("ha_smoke", conf)
    assert wait_until(lambda: api.run_state("ha_smoke", run_id), 300,
                      f"ha_smoke {run_id} finished") == "success"
    return run_id


def test_a_dag_that_breaks_on_airflow_3_stops_the_upgrade_before_anything_changes(lab, say):
    assert release_line() == 2
    broken = DAGS / "uses_removed_airflow_2_api.py"
    broken.write_text("from airflow import DAG\n"
                      "from airflow.operators.dummy import DummyOperator\n\n"
                      "with DAG('old', schedule_interval='@daily'):\n"
                      "    DummyOperator(task_id='nothing')\n")
    pin_airflow_version(None)  # the operator's edit: the tree's default, Airflow 3
    try:
        returncode, output = orchestrate(say, "orch.upgrade")
    finally:
        broken.unlink()
        pin_airflow_version("2.10.5")
    assert returncode != 0
    assert re.search(r"uses_removed_airflow_2_api\.py:4:\d+: AIR301", output), output
    assert "airflow.operators.dummy.DummyOperator" in output  # AIR302
    assert "install Airflow" not in output  # stopped at the check
    assert release_line() == 2 and healthy(health())


def test_the_upgrade_to_airflow_3_keeps_the_history_and_runs_new_dags(lab, say):
    api = Api(ADMIN)
    BEFORE_UPGRADE["run"] = successful_run(api)
    pin_airflow_version(None)
    returncode, output = orchestrate(say, "orch.upgrade", "test=True")
    assert returncode == 0, output
    assert "upgrade 2.10.5 -> 3.3.2: take a dump first" in output, output
    assert release_line() == 2

    returncode, output, seconds, longest = run_watching_downtime(say, "orch.upgrade")
    assert returncode == 0, output
    migrate = re.search(r"db migrate ([\d.]+) s", output)
    say(f"BENCHMARK upgrade 2.10.5 -> 3.3.2: whole run {seconds:.1f} s, UI unavailable through "
        f"the load balancer {longest:.1f} s at most at a stretch, airflow db migrate "
        f"{migrate.group(1) if migrate else '?'} s")

    assert release_line() == 3
    api = Api(ADMIN)
    assert api.get(f"/dags/ha_smoke/dagRuns/{BEFORE_UPGRADE['run']}").json()["state"] == "success"
    run_id = successful_run(api)
    assert api.xcom("ha_smoke", run_id, "worker_hostname") == "airflow-worker1"

    returncode, output = orchestrate(say, "orch.upgrade")
    assert returncode == 0 and "nothing to upgrade, verify only" in output, output

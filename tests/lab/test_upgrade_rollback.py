"""orch.upgrade_rollback on the lab, the last destructive test: after
test_upgrade.py upgraded the lab to Airflow 3 and every other test ran on
it, the operator pins 2.10.5 again and rolls back. The database is the dump
taken before the upgrade: the runs made on 2.10.5 are there, those made
since are not; new runs succeed. The rollback's downtime is printed."""

import pytest

from tests.conftest import pin_airflow_version
from tests.lab.airflow_api import Api, release_line
from tests.lab.test_upgrade import ADMIN, BEFORE_UPGRADE, run_watching_downtime, successful_run
from tests.lab.writers import orchestrate, salt_run_json

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


def test_a_rollback_restores_the_dump_and_runs_airflow_2_again(lab, say):
    if "run" not in BEFORE_UPGRADE:
        pytest.skip("rolls back the upgrade test_upgrade.py makes in the same run")
    api = Api(ADMIN)
    since_upgrade = successful_run(api)
    record = salt_run_json("airflow_ha.topology")["record"] or {}
    if record.get("primary", "airflow-server1") != "airflow-server1":
        # The dump is on the primary of the upgrade's time.
        pin_airflow_version("2.10.5")
        returncode, output = orchestrate(say, "orch.upgrade_rollback")
        assert returncode != 0 and "orch.failback" in output, output
        pin_airflow_version(None)
        returncode, output = orchestrate(say, "orch.failback")
        assert returncode == 0, output

    pin_airflow_version("2.10.5")
    returncode, output, seconds, longest = run_watching_downtime(say, "orch.upgrade_rollback")
    assert returncode == 0, output
    say(f"BENCHMARK rollback 3.3.2 -> 2.10.5: whole run {seconds:.1f} s, UI unavailable "
        f"through the load balancer {longest:.1f} s at most at a stretch")

    assert release_line() == 2
    api = Api(ADMIN)
    assert api.get(f"/dags/ha_smoke/dagRuns/{BEFORE_UPGRADE['run']}").json()["state"] == "success"
    assert api.get(f"/dags/ha_smoke/dagRuns/{since_upgrade}").status_code == 404
    successful_run(api)

    returncode, output = orchestrate(say, "orch.upgrade_rollback")
    assert returncode == 0 and "nothing to roll back, verify only" in output, output

"""ha_core.runbook: every step the runner runs has a title and advice that
name its nodes."""

import re

import pytest

from ha_core import runbook
from ha_core.errors import OperationFailed
from tests.conftest import REPO

RUNNER = (REPO / "_runners" / "airflow_ha.py").read_text()


def test_every_step_of_the_runner_is_in_the_catalogue_and_back():
    called = set(re.findall(r'return _step\("(\w+)"', RUNNER))
    assert called == set(runbook.STEPS)


@pytest.mark.parametrize("step", sorted(runbook.STEPS))
def test_title_and_advice_format_with_the_names_the_runner_gives(step):
    given = re.search(rf'return _step\("{step}", action((?:, \w+=\w+)*)\)', RUNNER).group(1)
    names = {name: f"<{name}>" for name in re.findall(r"(\w+)=", given)}
    title, advice = runbook.title(step, **names), runbook.advice(step, **names)
    # A placeholder left unformatted; the braces of a pillar's JSON are not one.
    assert "{" not in title and advice and not re.search(r"\{\w+\}", advice)


# --- Checks of what a step achieved -------------------------------------------------

def test_a_primary_still_running_or_crashed_is_not_shut_down():
    with pytest.raises(OperationFailed, match="in production \\(running: True\\)"):
        runbook.shut_down("s1", {"running": True, "cluster_state": "in production"})
    with pytest.raises(OperationFailed, match="not cleanly shut down"):
        runbook.shut_down("s1", {"running": False, "cluster_state": "in crash recovery"})
    assert runbook.shut_down("s1", {"running": False, "cluster_state": "shut down",
                                    "last_checkpoint_lsn": "0/5000028", "fenced": True}) == {
        "checkpoint": "0/5000028", "fenced": True}


PROMOTION = {"timeline": 2, "switch_lsn": "0/50000A0", "seconds": 0.2}


def test_a_planned_promotion_must_begin_its_timeline_after_the_checkpoint():
    verified = runbook.promoted("s2", "s1", "0/5000028", PROMOTION, {"role": "primary"})
    assert verified["old checkpoint"] == "0/5000028" and verified["timeline"] == 2
    with pytest.raises(OperationFailed, match="not after s1's checkpoint 0/5000100"):
        runbook.promoted("s2", "s1", "0/5000100", PROMOTION, {"role": "primary"})


def test_an_unplanned_promotion_only_needs_a_primary():
    assert "old checkpoint" not in runbook.promoted("s2", "s1", None, PROMOTION,
                                                    {"role": "primary"})
    with pytest.raises(OperationFailed, match="s2 is standby after its promotion"):
        runbook.promoted("s2", "s1", None, PROMOTION, {"role": "standby"})


def test_redis_checks_name_what_is_not_as_it_should_be():
    assert runbook.redis_promoted("s2", {"method": "failover", "offset": 9},
                                  {"role": "master"}) == {"method": "failover", "offset": 9}
    with pytest.raises(OperationFailed, match="Redis on s2 is replica after its promotion"):
        runbook.redis_promoted("s2", {"method": "failover", "offset": 9}, {"role": "replica"})
    with pytest.raises(OperationFailed, match="with link down, not a replica of s2"):
        runbook.redis_old_master_follows("s1", "s2", {"role": "replica"},
                                         {"role": "replica", "master_link_status": "down"})
    with pytest.raises(OperationFailed, match="does not follow s1 with its link up"):
        runbook.redis_follows("s2", "s1", {"role": "master", "master_link_status": None,
                                           "changed": True})


def test_a_state_run_that_did_not_render_or_failed_is_reported_by_node():
    good = {"file_|-a": {"result": True, "comment": "ok"}}
    runbook.state_applied("airflow.config", ["w1"], {"w1": good})
    with pytest.raises(OperationFailed, match="airflow.config on w1: Minion did not return"):
        runbook.state_applied("airflow.config", ["w1"], {"w1": "Minion did not return"})
    with pytest.raises(OperationFailed, match=r"on w2 failed: \['boom'\]"):
        runbook.state_applied("airflow.config", ["w1", "w2"],
                              {"w1": good, "w2": {"x": {"result": False, "comment": "boom"}}})


def test_a_rejoin_is_verified_by_the_primary_showing_it_streaming():
    rejoin = {"method": "rewind", "seconds": 1.0, "timeline": 2, "rewind_error": None}
    primary = {"standbys": [{"application_name": "s1", "state": "streaming"}]}
    verified = runbook.rejoined("s1", "s2", rejoin, {"role": "standby"}, primary)
    assert verified["method"] == "rewind" and "rewind failed" in verified
    with pytest.raises(OperationFailed, match="s1 does not stream from s2"):
        runbook.rejoined("s1", "s2", rejoin, {"role": "standby"}, {"standbys": []})


# --- Starting Airflow's units again -------------------------------------------------

def test_a_unit_is_started_unless_it_runs_since_its_configuration_changed():
    assert runbook.start_wait(None, 5.0) == 0  # stopped: start it now
    assert runbook.start_wait(120.0, 300.0) is None  # restarted since the change: leave it
    assert runbook.start_wait(600.0, 300.0) == 0  # older than its configuration: restart


def test_a_unit_still_starting_is_given_the_rest_of_its_start_up_time_first():
    assert runbook.start_wait(10.0, 5.0) == runbook.START_UP_SECONDS - 10.0
    assert runbook.start_wait(10.0, float("inf")) is None  # no configuration named

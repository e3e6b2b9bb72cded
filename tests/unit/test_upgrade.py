"""ha_core.upgrade: what orch.upgrade and orch.upgrade_rollback decide from
the versions the nodes run, the primary and the dumps it keeps."""

import pytest

from ha_core import upgrade

NODES = ("s1", "s2", "w1")
DUMP = "airflow-2.10.5-20261201T101500Z.dump"


def running(*versions):
    return dict(zip(NODES, versions))


def plan(installed, backups=(), primary_role="primary", **kwargs):
    return upgrade.plan("3.3.2", installed, "s1", primary_role, list(backups), **kwargs)


def test_an_upgrade_across_release_lines_checks_dags_and_dumps_the_database_first():
    result = plan(running("2.10.5", "2.10.5", "2.10.5"))
    assert (result["mode"], result["from"], result["to"]) == ("upgrade", "2.10.5", "3.3.2")
    assert result["check_dags"] and result["take_backup"] and not result["refused"]


def test_a_run_again_after_the_migrator_switched_keeps_the_dump_taken_before():
    result = plan(running("3.3.2", "2.10.5", "2.10.5"),
                  backups=["airflow-2.10.5-20261130T090000Z.dump", DUMP])
    assert result["mode"] == "upgrade" and not result["take_backup"]
    assert result["backup"] == DUMP  # the newest taken from 2.10.5


def test_a_migrator_switched_without_a_dump_is_refused():
    result = plan(running("3.3.2", "2.10.5", "2.10.5"))
    assert "nothing to roll back to" in result["refused"]


def test_every_node_on_the_pillar_version_only_verifies():
    assert plan(running("3.3.2", "3.3.2", "3.3.2"))["mode"] == "done"


def test_a_new_node_without_airflow_moves_with_the_others():
    result = plan(running("2.10.5", "2.10.5", None))
    assert result["mode"] == "upgrade" and result["from"] == "2.10.5"


def test_a_node_that_does_not_answer_is_refused_naming_it():
    result = plan(running("2.10.5", False, "2.10.5"))
    assert result["refused"].startswith("s2 did not answer")


def test_an_upgrade_needs_a_writable_primary():
    assert "standby" in plan(running("2.10.5", "2.10.5", "2.10.5"),
                             primary_role="standby")["refused"]


def test_nodes_on_two_other_versions_are_refused():
    assert "2.10.4, 2.10.5" in plan(running("2.10.5", "2.10.4", "2.10.5"))["refused"]


def test_going_back_is_refused_as_an_upgrade_and_named_a_rollback():
    result = upgrade.plan("2.10.5", running("3.3.2", "3.3.2", "3.3.2"), "s1", "primary", [DUMP])
    assert "orch.upgrade_rollback" in result["refused"]


def test_a_rollback_restores_the_newest_dump_taken_from_the_pillar_version():
    result = upgrade.plan("2.10.5", running("3.3.2", "3.3.2", "3.3.2"), "s1", "primary",
                          ["airflow-2.10.5-20261130T090000Z.dump", DUMP,
                           "airflow-3.3.2-20261202T000000Z.dump"], rollback=True)
    assert (result["mode"], result["from"], result["backup"]) == ("rollback", "3.3.2", DUMP)


def test_a_rollback_without_a_dump_on_the_primary_says_to_fail_back_first():
    result = upgrade.plan("2.10.5", running("3.3.2", "3.3.2", "3.3.2"), "s1", "primary", [],
                          rollback=True)
    assert ("fail back first, with airflow:version 3.3.2 in the pillar again (salt-run "
            "state.orchestrate orch.failback), then set it to 2.10.5") in result["refused"]


def test_a_finished_rollback_only_verifies_but_not_while_the_database_is_newer():
    done = running("2.10.5", "2.10.5", "2.10.5")
    assert upgrade.plan("2.10.5", done, "s1", "primary", [DUMP], database_current=True,
                        rollback=True)["mode"] == "done"
    assert upgrade.plan("2.10.5", done, "s1", "primary", [DUMP], database_current=False,
                        rollback=True)["mode"] == "rollback"


@pytest.mark.parametrize("names, expected", [
    ([], None),
    (["airflow-2.10.5-20261201T101500Z.dump.tmp", "notes.txt"], None),
    (["airflow-2.10.5-20261130T090000Z.dump", DUMP], DUMP),
])
def test_newest_backup(names, expected):
    assert upgrade.newest_backup(names, "2.10.5") == expected


def test_a_backup_name_reads_back():
    assert upgrade.newest_backup([upgrade.backup_name("2.10.5", "20261201T101500Z")],
                                 "2.10.5") == DUMP


def test_ruff_findings_split_into_breaking_and_deprecated():
    output = ("dags/a.py:3:15: AIR301 [*] `schedule_interval` is removed in Airflow 3.0\n"
              "dags/a.py:1:6: AIR311 `airflow.DAG` is removed in Airflow 3.0; It still works\n"
              "dags/b.py:2:1: AIR302 `airflow.operators.dummy.DummyOperator` is moved\n"
              "Found 3 errors.\n")
    breaking, suggested = upgrade.dag_check_findings(output)
    assert [line.split(":")[0] + line.split(" ")[1] for line in breaking] == [
        "dags/a.pyAIR301", "dags/b.pyAIR302"]
    assert len(suggested) == 1


def test_plan_lines_say_what_the_run_does():
    lines = upgrade.plan_lines(plan(running("2.10.5", "2.10.5", "2.10.5")))
    assert lines[-1] == ("    upgrade 2.10.5 -> 3.3.2: take a dump first, migrate the database "
                         "once from s1")


def test_a_runbook_refuses_while_the_pillar_names_another_release_line():
    installed = {"s1": "3.3.2", "s2": "3.3.2", "w1": None}
    assert upgrade.release_line_refusal("3.3.1", installed) is None  # same line
    refusal = upgrade.release_line_refusal("2.10.5", installed)
    assert refusal.startswith("the pillar's airflow:version is 2.10.5, but s1 runs 3.3.2, "
                              "s2 runs 3.3.2: this runbook's state runs would refuse half-way")

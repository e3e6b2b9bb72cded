"""Our PostgreSQL states against real servers (pg_cluster.py): roles whose
passwords never show, and a standby built once and then left alone."""

import subprocess
import threading

from ha_core import pg_facts
from tests.functional.pg_cluster import (  # noqa: F401 (fixtures)
    initdb,
    pg_nodes,
    pg_pair,
    streaming_standbys,
    wait_for,
)


def states(node):
    node.module  # loads the node's loaders with its pg_replication settings
    return node._loaders.states


def test_role_is_created_then_left_alone_then_its_password_changed(pg_pair):
    primary = pg_pair.primary
    present = states(primary).pg_role.present

    created = present(name="airflow", password="first-secret", member_of=["pg_monitor"])
    assert created.result is True and created.changes == {"role": "created", "member_of": ["pg_monitor"]}
    verifier = primary.sql("select rolpassword from pg_authid where rolname = 'airflow'")
    assert pg_facts.scram_password_matches(verifier, "first-secret")

    again = present(name="airflow", password="first-secret", member_of=["pg_monitor"])
    assert again.result is True and again.changes == {}

    changed = present(name="airflow", password="second-secret")
    assert changed.changes == {"password": "changed"}
    verifier = primary.sql("select rolpassword from pg_authid where rolname = 'airflow'")
    assert pg_facts.scram_password_matches(verifier, "second-secret")
    for ret in (created, again, changed):
        assert "secret" not in repr(ret.raw)


def test_role_password_is_on_no_command_line(pg_pair):
    present = states(pg_pair.primary).pg_role.present
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for attempt in range(20):
            present(name="watched", password=f"ps-visible-{attempt}")
    finally:
        done.set()
        watcher.join()
    assert len(seen) > 5
    assert not [snapshot for snapshot in seen if "ps-visible-" in snapshot]


def test_rewind_source_grants_let_pg_rewind_use_a_plain_role(pg_pair):
    primary = pg_pair.primary
    ret = states(primary).pg_role.present(name="rewinder", password="x-pass", rewind_source=True)
    assert ret.changes == {"role": "created", "rewind_grants": "granted"}
    assert primary.sql("select bool_and(has_function_privilege('rewinder', f, 'execute')) from "
                       "unnest(array['pg_catalog.pg_ls_dir(text, boolean, boolean)',"
                       " 'pg_catalog.pg_read_binary_file(text)']) f") == "t"
    assert states(primary).pg_role.present(name="rewinder", password="x-pass",
                                           rewind_source=True).changes == {}


def test_standby_state_leaves_a_streaming_standby_alone(pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    ret = states(standby).pg_replication.standby(
        name="standby", primary=primary.address, database="airflow")
    assert ret.result is True and ret.changes == {}
    assert "already a standby" in ret.comment


def test_standby_state_builds_a_fresh_cluster_once(pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    # What a package install leaves: a running, empty cluster of its own.
    standby.stop()
    standby.wipe()
    initdb(standby.data_dir)
    standby.start()
    build = states(standby).pg_replication.standby(
        name="standby", primary=primary.address, database="airflow")
    assert build.result is True, build.comment
    assert build.changes["standby_of"] == primary.address
    assert build.changes["method"] == "basebackup"
    wait_for(lambda: standby.name in streaming_standbys(primary), 30, "the rebuilt standby streaming")

    again = states(standby).pg_replication.standby(
        name="standby", primary=primary.address, database="airflow")
    assert again.changes == {}


def test_standby_state_never_overwrites_a_primary_holding_the_database(pg_pair):
    primary = pg_pair.primary
    primary.sql("create database airflow")
    ret = states(primary).pg_replication.standby(
        name="standby", primary="127.0.0.1:1", database="airflow")
    assert ret.result is False
    assert "never overwrites a primary" in ret.comment
    assert primary.sql("select pg_is_in_recovery()") == "f"

"""ha_core.pg_decisions: a server's role, whether it may be promoted, how it
rejoins, what the standby state does with it, what the role state changes."""

import pytest

from ha_core import errors, pg_decisions, pg_facts
from tests.unit.test_pg_facts import scram_verifier

MiB = 2**20


@pytest.mark.parametrize("running, cluster_state, standby_signal, role", [
    (False, "in production", False, "stopped"),  # crashed: the control file says so
    (False, "shut down in recovery", True, "stopped"),
    (True, "in production", True, "primary"),  # e.g. while being fenced
    (True, "in archive recovery", False, "standby"),
    (True, "shut down", True, "standby"),  # just started, recovery not begun yet
    (True, "in crash recovery", False, "primary"),
])
def test_a_server_role_comes_from_its_control_file_then_its_signal_file(
        running, cluster_state, standby_signal, role):
    assert pg_decisions.server_role(running, cluster_state, standby_signal) == role


# --- promotion_blockers --------------------------------------------------------------


def test_only_a_running_standby_can_be_promoted_even_by_force():
    for role in ("primary", "stopped"):
        assert pg_decisions.promotion_blockers(role, False, True, 0, force=True) == [
            f"it is {role}, not a running standby"]


def test_a_healthy_standby_may_be_promoted():
    assert pg_decisions.promotion_blockers("standby", False, True, None) == []
    assert pg_decisions.promotion_blockers("standby", False, False, 10, max_lag_bytes=MiB) == []


def test_a_fenced_standby_is_promoted_only_by_force():
    [reason] = pg_decisions.promotion_blockers("standby", True, True, 0)
    assert "fenced" in reason
    assert pg_decisions.promotion_blockers("standby", True, True, 0, force=True) == []


def test_lag_blocks_promotion_only_when_the_primary_is_unreachable():
    [reason] = pg_decisions.promotion_blockers("standby", False, False, 2 * MiB, max_lag_bytes=MiB)
    assert "unreachable and the standby is 2097152 bytes of WAL behind (more than 1048576)" in (
        reason)
    [reason] = pg_decisions.promotion_blockers("standby", False, False, None, max_lag_bytes=MiB)
    assert "lag is unknown" in reason
    assert pg_decisions.promotion_blockers("standby", False, True, 2 * MiB,
                                           max_lag_bytes=MiB) == []
    assert pg_decisions.promotion_blockers("standby", False, False, 2 * MiB) == []  # no limit
    assert pg_decisions.promotion_blockers("standby", False, False, 2 * MiB, MiB,
                                           force=True) == []


# --- choose_rejoin_method, rejoin_method ---------------------------------------------


# The new primary left timeline 1 at 0/30268F8 and is at 0/5000000 on timeline 2.
PROMOTED = [(1, 0x30268F8), (2, 0x5000000)]


@pytest.mark.parametrize("local_timeline, local_last_lsn, rewind_possible, method", [
    # Shut down cleanly before the switch (a planned switchover): its WAL is
    # all in the new primary's history.
    (1, 0x3026880, True, "none"),
    (1, 0x3026880, False, "none"),
    # Wrote on timeline 1 past the switch: diverged.
    (1, 0x30268F8, True, "rewind"),
    (1, 0x4000000, True, "rewind"),
    (1, 0x4000000, False, "basebackup"),
    # Crashed or was in recovery: where its WAL ends is unknown.
    (1, None, True, "rewind"),
    (1, None, False, "basebackup"),
    # A standby of the current timeline that is behind.
    (2, 0x4000000, False, "none"),
    (2, 0x6000000, True, "rewind"),
    # A sibling timeline (promoted elsewhere too): not in the primary's history.
    (3, 0x3100000, True, "rewind"),
])
def test_the_rejoin_method_follows_the_timelines(
        local_timeline, local_last_lsn, rewind_possible, method):
    assert pg_decisions.choose_rejoin_method(
        same_cluster=True, local_timeline=local_timeline, local_last_lsn=local_last_lsn,
        primary_timelines=PROMOTED, rewind_possible=rewind_possible) == method


def test_a_node_of_another_cluster_rejoins_by_base_backup():
    assert pg_decisions.choose_rejoin_method(
        same_cluster=False, local_timeline=1, local_last_lsn=0x100, primary_timelines=PROMOTED,
        rewind_possible=True) == "basebackup"


IDENTITY = {"system_identifier": "7311650800973885350", "timeline": 2, "flush_lsn": 0x5000000}
SHUT_DOWN = {
    "Database cluster state": "shut down",
    "Database system identifier": "7311650800973885350",
    "Latest checkpoint's TimeLineID": "1",
    "Latest checkpoint location": "0/3026880",
    "wal_log_hints setting": "off",
    "Data page checksum version": "0",
}


@pytest.mark.parametrize("control, method", [
    (SHUT_DOWN, "none"),
    ({**SHUT_DOWN, "Latest checkpoint location": "0/4000000"}, "basebackup"),
    ({**SHUT_DOWN, "Latest checkpoint location": "0/4000000", "wal_log_hints setting": "on"},
     "rewind"),
    ({**SHUT_DOWN, "Latest checkpoint location": "0/4000000",
      "Data page checksum version": "1"}, "rewind"),
    # Crashed: its last checkpoint is not its last record.
    ({**SHUT_DOWN, "Database cluster state": "in production"}, "basebackup"),
    ({**SHUT_DOWN, "Database system identifier": "1"}, "basebackup"),
])
def test_the_rejoin_method_is_read_from_pg_controldata(control, method):
    assert pg_decisions.rejoin_method(control, IDENTITY, PROMOTED) == method


@pytest.mark.parametrize("control, possible", [
    (SHUT_DOWN, False),
    ({**SHUT_DOWN, "wal_log_hints setting": "on"}, True),
    ({**SHUT_DOWN, "Data page checksum version": "1"}, True),
])
def test_rewinding_needs_wal_log_hints_or_checksums(control, possible):
    assert pg_decisions.rewind_possible(control) is possible


# --- divergence --------------------------------------------------------------------


def divergence(local_timeline, local_end, local_history=(), rewind_possible=True,
               primary_timelines=PROMOTED, same_cluster=True):
    if local_history is not None:
        local_history = list(local_history)
    return pg_decisions.divergence(same_cluster, local_timeline, local_end, local_history,
                                   primary_timelines, rewind_possible)


@pytest.mark.parametrize("local_timeline, local_end, local_history, fork, method", [
    # Shut down cleanly before the switch (a planned switchover): its
    # shutdown checkpoint ends where the new timeline begins, or before.
    (1, 0x30268F8, [], (1, 0x30268F8), "none"),
    (1, 0x3026880, [], (1, 0x3026880), "none"),
    # Wrote on timeline 1 past the switch: diverged from there.
    (1, 0x4000000, [], (1, 0x30268F8), "rewind"),
    # A standby of the current timeline that is behind: nothing to discard.
    (2, 0x4000000, [(1, 0x30268F8)], (2, 0x4000000), "none"),
    # Ahead of the primary on its own timeline: what the primary lacks.
    (2, 0x6000000, [(1, 0x30268F8)], (2, 0x5000000), "rewind"),
    # Promoted elsewhere too: its timeline 3 is not in the primary's history;
    # walking back, both share timeline 1, up to where the first left it.
    (3, 0x3200000, [(1, 0x3100000)], (1, 0x30268F8), "rewind"),
    (3, 0x3200000, [(1, 0x3000000)], (1, 0x3000000), "rewind"),
    # A timeline 2 of its own, begun elsewhere than the primary's: not the same.
    (2, 0x3200000, [(1, 0x3100000)], (1, 0x30268F8), "rewind"),
    # Its history file is missing: its own timeline is matched alone.
    (2, 0x4000000, None, (2, 0x4000000), "none"),
])
def test_the_fork_is_where_the_primary_s_history_leaves_the_node_s(
        local_timeline, local_end, local_history, fork, method):
    decided = divergence(local_timeline, local_end, local_history)

    assert (decided["fork_timeline"], decided["fork_lsn"]) == (
        fork[0], pg_facts.format_lsn(fork[1]))
    assert decided["method"] == method
    assert (decided["timeline"], decided["primary_timeline"], decided["same_cluster"]) == (
        local_timeline, 2, True)
    assert decided["local_end_lsn"] == pg_facts.format_lsn(local_end)
    assert decided["discarded_bytes"] == local_end - fork[1]
    if method == "none":
        assert decided["discarded_lsn_range"] is None
    else:
        assert decided["discarded_lsn_range"] == pg_facts.format_lsn_range(fork[1], local_end)


def test_a_diverged_node_without_rewind_is_discarded_by_a_base_backup():
    decided = divergence(1, 0x4000000, rewind_possible=False)
    assert (decided["method"], decided["discarded_lsn_range"], decided["discarded_bytes"]) == (
        "basebackup", "0/30268F8-0/4000000", 0x4000000 - 0x30268F8)


def test_a_node_on_the_primary_s_only_timeline_diverges_past_its_position():
    decided = divergence(1, 0x3000100, primary_timelines=[(1, 0x3000000)])
    assert (decided["fork_lsn"], decided["discarded_bytes"]) == ("0/3000000", 0x100)
    assert divergence(1, 0x2000000, primary_timelines=[(1, 0x3000000)])["method"] == "none"


def test_a_node_of_another_cluster_shares_no_history():
    assert divergence(1, None, same_cluster=False) == {
        "method": "basebackup", "same_cluster": False, "timeline": 1, "primary_timeline": 2,
        "fork_timeline": None, "fork_lsn": None, "local_end_lsn": None,
        "discarded_lsn_range": None, "discarded_bytes": 0,
    }


def test_a_fork_that_cannot_be_found_is_not_guessed():
    with pytest.raises(errors.InvalidInput, match="its timeline 3 is not among the primary's "
                       "\\(1, 2\\) and its history file 00000003.history is missing"):
        divergence(3, 0x3200000, None)
    with pytest.raises(errors.InvalidInput, match="is not among the primary's \\(1, 2\\); "
                       "compare"):
        divergence(3, 0x3200000, [(4, 0x3100000)])
    with pytest.raises(errors.InvalidInput, match="where the node's WAL ends is unknown"):
        divergence(1, None)


def test_the_wal_kept_is_the_segments_holding_the_range_and_the_histories():
    names = ["000000010000000000000002", "000000010000000000000003",
             "000000010000000000000004", "000000010000000000000005",  # recycled, past the end
             "000000030000000000000003.partial", "00000002.history", "00000003.history",
             "000000010000000000000003.00000028.backup", "archive_status"]
    assert pg_decisions.wal_files_to_keep(names, 16 * MiB, 0x30268F8, 0x5000000) == [
        "000000010000000000000003", "000000010000000000000004", "00000002.history",
        "00000003.history", "000000030000000000000003.partial"]
    # A range ending on a segment's first byte does not need that segment.
    assert pg_decisions.wal_files_to_keep(names, 16 * MiB, 0x4000000, 0x4000001) == [
        "000000010000000000000004", "00000002.history", "00000003.history"]


# --- rejoin_refusal, discard_refusal --------------------------------------------------


def test_only_a_stopped_node_is_rejoined():
    assert pg_decisions.rejoin_refusal("pg-a", "pg-a", "stopped", "10.0.0.2") is None
    refusal = pg_decisions.rejoin_refusal("pg-a", "pg-a", "standby", "10.0.0.2")
    assert isinstance(refusal, errors.Refused)
    assert str(refusal) == ("pg-a is running as standby; rejoin needs it stopped; "
                            "stop or fence it first (pg_replication.fence)")


def test_a_running_primary_is_a_split_brain_to_resolve_first():
    refusal = pg_decisions.rejoin_refusal("airflow-server1", "srv1", "primary", "10.0.0.2")
    assert isinstance(refusal, errors.Refused)
    assert refusal.what == ("refusing to rejoin airflow-server1 to 10.0.0.2: airflow-server1 is "
                            "running as a writable primary")
    assert refusal.now.startswith("split brain: airflow-server1 and 10.0.0.2 are both writable")
    assert "`salt srv1 pg_replication.fence reason='split brain'`" in refusal.fix
    assert "`salt srv1 pg_replication.divergence primary=10.0.0.2`" in refusal.fix
    assert "`salt srv1 pg_replication.rejoin primary=10.0.0.2`" in refusal.fix


DIVERGED = divergence(1, 0x4000000)  # 0/30268F8-0/4000000


def test_discarding_wal_needs_a_consent_naming_the_range():
    refusal = pg_decisions.discard_refusal("airflow-server1", "srv1", "10.0.0.2", DIVERGED)
    assert isinstance(refusal, errors.Refused)
    assert str(refusal) == (
        "refusing to rejoin airflow-server1 to 10.0.0.2 by rewind: it would discard "
        "0/30268F8-0/4000000, 16619272 bytes of airflow-server1's WAL past 0/30268F8, where "
        "its history and that of 10.0.0.2 part (on timeline 1); nothing was changed; to discard "
        "them, keeping a copy of that WAL beside the data directory, run `salt srv1 "
        "pg_replication.rejoin primary=10.0.0.2 discard=0/30268F8-0/4000000`")
    assert pg_decisions.discard_refusal("airflow-server1", "srv1", "10.0.0.2", DIVERGED,
                                        "0/30268F8-0/4000000") is None


@pytest.mark.parametrize("discard", ["0/30268F8-0/3FFFFFF", "0/30268F8", "yes", True, ""])
def test_a_consent_for_another_range_is_none(discard):
    refusal = pg_decisions.discard_refusal("pg-a", "pg-a", "10.0.0.2", DIVERGED, discard)
    assert refusal.what.startswith(f"refusing to rejoin pg-a to 10.0.0.2 by rewind: "
                                   f"discard={discard} is not what it would discard, "
                                   f"0/30268F8-0/4000000, 16619272 bytes")
    assert "discard=0/30268F8-0/4000000`" in refusal.fix


def test_nothing_to_discard_needs_no_consent():
    for decided in (divergence(1, 0x3026880), divergence(1, None, same_cluster=False)):
        assert pg_decisions.discard_refusal("pg-a", "pg-a", "10.0.0.2", decided) is None
        assert pg_decisions.discard_refusal("pg-a", "pg-a", "10.0.0.2", decided, "x") is None


def test_a_base_backup_keeps_the_data_directory_it_replaces():
    refusal = pg_decisions.discard_refusal("pg-a", "pg-a", "10.0.0.2",
                                           divergence(1, 0x4000000, rewind_possible=False))
    assert refusal.what.startswith("refusing to rejoin pg-a to 10.0.0.2 by basebackup")
    assert "keeping the data directory it replaces beside the data directory" in refusal.fix


# --- standby_action -------------------------------------------------------------------


standby_action = pg_decisions.standby_action


def test_a_standby_of_the_primary_is_kept():
    status = {"role": "standby", "standby_of": {"host": "airflow-server1", "port": 5432}}
    assert standby_action(status, "airflow-server1", False)[0] == "keep"


@pytest.mark.parametrize("host", ["airflow-server1", "10.11.12.10"])
def test_a_standby_following_the_primary_by_name_or_by_address_is_kept(host):
    status = {"role": "standby", "standby_of": {"host": host, "port": 5432}}
    assert standby_action(status, "airflow-server1", False, "10.11.12.10")[0] == "keep"
    assert standby_action(status, "airflow-server2", False, "10.11.12.20")[0] == "build"


def test_a_standby_configured_but_stopped_is_built_again_unless_fenced():
    """A start that failed after the standby was configured: the state's
    retry starts it (rejoin finds nothing to copy), never keeps it down."""
    status = {"role": "stopped", "standby_of": {"host": "10.11.12.10", "port": 5432}}
    assert standby_action(status, "airflow-server1", False, "10.11.12.10") == (
        "build", "a standby of airflow-server1, but stopped")
    fenced = dict(status, fenced=True)
    assert standby_action(fenced, "airflow-server1", False, "10.11.12.10")[0] == "refuse"


def test_a_fresh_package_cluster_is_built_as_standby():
    assert standby_action({"role": "primary", "standby_of": None}, "airflow-server1", False)[0] == "build"


def test_a_primary_with_the_airflow_database_is_never_overwritten():
    action, why = standby_action({"role": "primary"}, "airflow-server1", True)
    assert action == "refuse" and "never overwrites a primary" in why


def test_a_fenced_node_is_left_for_failback():
    action, why = standby_action({"role": "stopped", "fenced": True}, "airflow-server2", False)
    assert action == "refuse" and "orch.failback" in why


def test_a_standby_of_another_node_is_rebuilt():
    status = {"role": "standby", "standby_of": {"host": "airflow-server9"}}
    assert standby_action(status, "airflow-server1", False) == (
        "build", "follows airflow-server9, not airflow-server1")


def test_the_primary_may_be_given_with_its_port():
    status = {"role": "standby", "standby_of": {"host": "127.0.0.1", "port": 5433}}
    assert standby_action(status, "127.0.0.1:5433", False)[0] == "keep"
    assert standby_action(status, "127.0.0.1:5434", False)[0] == "build"


def test_the_primary_is_read_as_every_node_address_is():
    status = {"role": "standby", "standby_of": {"host": "fd00::10", "port": 5433}}
    assert standby_action(status, "[fd00::10]:5433", False)[0] == "keep"
    assert standby_action(status, "[fd00::10]", False)[0] == "keep"
    assert standby_action(status, "[fd00::20]", False) == (
        "build", "follows [fd00::10]:5433, not [fd00::20]")
    with pytest.raises(errors.InvalidInput, match="give HOST or HOST:PORT"):
        standby_action(status, "fd00::10", False)


# --- role_changes -----------------------------------------------------------------------


def current_role(password="s3cret", **overrides):
    """A role as pg_role's query returns it."""
    return {"replication": False, "login": True, "verifier": scram_verifier(password),
            "member_of": [], "rewind_grants": {}, **overrides}


def test_a_missing_role_is_created_with_its_memberships_and_grants():
    statements, changes = pg_decisions.role_changes(
        None, "replicator", "s3cret", replication=True, member_of=["pg_monitor"],
        rewind_source=True)
    assert statements[:2] == [
        "CREATE ROLE \"replicator\" LOGIN REPLICATION PASSWORD 's3cret';",
        'GRANT "pg_monitor" TO "replicator";',
    ]
    assert len(statements) == 2 + 4  # the functions pg_rewind calls
    assert changes == {"role": "created", "member_of": ["pg_monitor"],
                       "rewind_grants": "granted"}


def test_a_role_as_configured_is_left_alone():
    assert pg_decisions.role_changes(current_role(member_of=["pg_monitor"]), "airflow", "s3cret",
                                     member_of=["pg_monitor"]) == ([], {})


def test_a_changed_password_is_set_again_and_reported_without_it():
    statements, changes = pg_decisions.role_changes(current_role(), "airflow", "it's new")
    assert statements == ["ALTER ROLE \"airflow\" PASSWORD 'it''s new';"]
    assert changes == {"password": "changed"}


def test_attributes_and_missing_grants_are_changed():
    current = current_role(rewind_grants={"pg_catalog.pg_ls_dir(text, boolean, boolean)": False})
    statements, changes = pg_decisions.role_changes(current, "airflow", "s3cret",
                                                    replication=True, rewind_source=True)
    assert statements[0] == 'ALTER ROLE "airflow" LOGIN REPLICATION;'
    assert changes == {"replication": True, "rewind_grants": "granted"}

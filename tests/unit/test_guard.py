"""ha_core.guard: what a start guard decides, what a node reports, and how
the program fails."""

import json

import yaml

from ha_core import guard, pg_datadir
from tests.conftest import REPO

S1, S2 = "airflow-server1", "airflow-server2"


def record(primary, generation):
    return {"primary": primary, "generation": generation}


def pg_report(generation=1, primary=S1, running=True, recovery=True):
    return {"node": S2, "record": record(primary, generation),
            "postgresql": {"running": running, "recovery": recovery, "fenced": False,
                           "standby_of": "10.11.12.10"}}


def pg_action(copy=record(S1, 1), reports=None, starts_as_standby=False, released=None):
    return guard.postgresql_action(S1, copy, starts_as_standby, released,
                                   {S2: pg_report()} if reports is None else reports)


# --- PostgreSQL ------------------------------------------------------------------------


def test_a_node_starting_as_a_standby_starts_as_it_is_whatever_the_peers_say():
    assert pg_action(starts_as_standby=True, reports={S2: "no answer"}) == ("start", None)


def test_a_primary_whose_copy_names_it_and_whose_peer_follows_starts_as_primary():
    assert pg_action() == ("start", None)


def test_a_stopped_standby_will_start_in_recovery_and_counts_as_following():
    assert pg_action(reports={S2: pg_report(running=False)}) == ("start", None)


def test_a_peer_that_does_not_report_means_starting_fenced_with_the_command_to_run():
    action, reason = pg_action(reports={S2: "10.11.12.20:7433 did not report (timed out)"})
    assert action == "fence"
    assert f"{S2} does not report (10.11.12.20:7433 did not report (timed out))" in reason
    assert reason.endswith("run salt-run airflow_ha.unfence")


def test_a_writable_peer_means_starting_fenced():
    action, reason = pg_action(reports={S2: pg_report(recovery=False)})
    assert action == "fence" and f"{S2} is a writable PostgreSQL primary" in reason


def test_a_peer_that_would_start_as_primary_too_means_starting_fenced():
    action, reason = pg_action(reports={S2: pg_report(running=False, recovery=False)})
    assert action == "fence" and "would start as a primary" in reason


def test_a_peer_with_a_newer_record_means_starting_fenced_even_when_it_is_fenced():
    action, reason = pg_action(reports={S2: pg_report(generation=2, primary=S2)})
    assert action == "fence"
    assert f"{S2} has a newer topology record (generation 2, primary {S2})" in reason


def test_a_copy_naming_another_node_or_no_copy_means_starting_fenced():
    assert "names airflow-server2 as the primary" in pg_action(copy=record(S2, 3))[1]
    assert "has no copy of the topology record" in pg_action(copy=None)[1]


def test_the_newer_node_starts_beside_a_stale_fenced_one():
    """Both down after a forced failover, the stale one came up first and
    fenced itself: the newer one finds it in recovery with an older record."""
    stale = pg_report(generation=1, primary=S1, running=True, recovery=True)
    assert guard.postgresql_action(S2, record(S2, 2), False, None, {S1: stale}) == ("start", None)


def test_a_release_for_this_generation_lets_a_fenced_node_start_once():
    assert pg_action(reports={S2: "no answer"}, released=1) == ("start", None)
    assert pg_action(reports={S2: "no answer"}, released=0)[0] == "fence"
    assert pg_action(copy=record(S2, 1), reports={S2: "no answer"}, released=1)[0] == "fence"


# --- Redis ---------------------------------------------------------------------------------

PEERS = {S2: ("10.11.12.20", 6379)}


def redis_report(role="replica", generation=1):
    return {"node": S2, "record": record(S1, generation),
            "redis": {"role": role, "master_host": "10.11.12.10" if role == "replica" else None}}


def test_a_redis_replica_starts_as_it_is():
    role = ("replica", ("10.11.12.20", 6379))
    assert guard.redis_action(S1, record(S1, 1), role, {S2: "no answer"}, PEERS) == (
        "start", None)


def test_a_redis_master_with_a_following_peer_starts_as_master():
    assert guard.redis_action(S1, record(S1, 1), ("master", None), {S2: redis_report()},
                              PEERS) == ("start", None)


def test_a_redis_master_without_evidence_starts_as_a_replica_of_its_peer():
    for reports in ({S2: "no answer"}, {S2: redis_report(role="master")},
                    {S2: redis_report(generation=2)}):
        assert guard.redis_action(S1, record(S1, 1), ("master", None), reports, PEERS) == (
            "follow", ("10.11.12.20", 6379))


def test_a_redis_master_whose_copy_names_another_node_follows_that_node():
    assert guard.redis_action(S1, record(S2, 2), ("master", None), {S2: redis_report()},
                              PEERS) == ("follow", ("10.11.12.20", 6379))


def test_a_node_without_peers_starts_as_it_is():
    assert guard.redis_action(S1, None, ("master", None), {}, {}) == ("start", None)


# --- What a node reports ------------------------------------------------------------------


def test_a_node_reports_its_copy_and_what_its_servers_will_start_as(tmp_path):
    copy = tmp_path / "topology.json"
    copy.write_text(json.dumps(record(S1, 3)))
    data_dir = tmp_path / "main"
    data_dir.mkdir()
    (data_dir / pg_datadir.STANDBY_SIGNAL).write_text("")
    role_file = tmp_path / "replication.conf"
    role_file.write_text("replicaof 10.11.12.10 6379\n")
    report = guard.node_report(S2, str(copy), str(data_dir), str(role_file))
    assert report == {"node": S2, "record": record(S1, 3),
                      "postgresql": {"running": False, "recovery": True, "fenced": False,
                                     "standby_of": None},
                      "redis": {"role": "replica", "master_host": "10.11.12.10"}}
    assert guard.node_report(S2, str(tmp_path / "none.json")) == {"node": S2, "record": None}


# --- The program ----------------------------------------------------------------------------


def test_unknown_or_incomplete_arguments_print_the_usage_and_fail(capsys):
    assert guard.main([]) == 2
    assert guard.main(["mysql"]) == 2
    assert guard.main(["redis", "--node", S1]) == 2
    assert "usage:" in capsys.readouterr().err


def test_a_guard_that_cannot_read_its_files_fails_closed(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    assert guard.main(["redis", "--node", S1, "--record", missing, "--key", missing,
                       "--port", "7433", "--role-file", missing, "--redis-port", "6379"]) == 1
    assert "not starting" in capsys.readouterr().err


def test_the_installed_paths_are_the_states():
    defaults = yaml.safe_load((REPO / "salt" / "start_guard" / "defaults.yaml").read_text())
    assert (defaults["start_guard"]["program"], defaults["start_guard"]["core_dir"]) == (
        guard.INSTALLED_PROGRAM, guard.INSTALLED_CORE)

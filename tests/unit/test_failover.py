"""ha_core.failover: comparing WAL positions, deciding whether orch.failover
may run and what orch.failback does, checking the topology against the
record, reading Airflow's /health."""

import copy
import json
import re

import pytest

from ha_core.cluster import Cluster
from ha_core.failover import (
    airflow_health_problems,
    failback_decision,
    failover_decision,
    pillar_refusal,
    plan,
    received_everything,
    switch_proves_no_loss,
    topology_problems,
)
from ha_core.pg_facts import parse_lsn

S1, S2 = "airflow-server1", "airflow-server2"
ADDRESS = {S1: "10.11.12.10", S2: "10.11.12.20"}


# --- Realistic statuses (pg_replication.status, redis_replication.status) -----------


def pg_primary(node, standbys=(), **changes):
    """pg_replication.status of a running primary; standbys: {name: state}."""
    state = {
        "node_name": node, "checked_at": "2026-11-24T08:25:36+00:00", "role": "primary",
        "running": True, "timeline": 1, "system_identifier": "7311650800973885350",
        "cluster_state": "in production", "last_checkpoint_lsn": "0/3000060",
        "fenced": False, "fence": None, "standby_of": None,
        "current_lsn": "0/3000148",
        "standbys": [
            {"application_name": name, "client_addr": ADDRESS.get(name, "10.11.12.99"),
             "state": walsender_state, "sent_lsn": "0/3000148", "write_lsn": "0/3000148",
             "flush_lsn": "0/3000148", "replay_lsn": "0/3000148", "lag_bytes": 0,
             "lag_seconds": None, "sync_state": "async"}
            for name, walsender_state in dict(standbys).items()
        ],
        "slots": [{"slot_name": name.replace("-", "_"), "active": True,
                   "restart_lsn": "0/3000148"} for name in dict(standbys)],
    }
    state.update(changes)
    return state


def pg_standby(node, primary, received_lsn="0/3000148", **changes):
    """pg_replication.status of a running standby with its WAL receiver."""
    state = {
        "node_name": node, "checked_at": "2026-11-24T08:25:36+00:00", "role": "standby",
        "running": True, "timeline": 1, "system_identifier": "7311650800973885350",
        "cluster_state": "in archive recovery", "last_checkpoint_lsn": "0/3000060",
        "fenced": False, "fence": None, "standby_of": {"host": primary, "port": 5432},
        "wal_receiver": {"status": "streaming", "lsn": received_lsn},
        "received_lsn": received_lsn, "replayed_lsn": "0/3000000",
        "recovery": {"activity": "recovering", "wal_file": "000000010000000000000003"},
    }
    state.update(changes)
    return state


def pg_stopped(node, **changes):
    state = {
        "node_name": node, "checked_at": "2026-11-24T08:25:36+00:00", "role": "stopped",
        "running": False, "timeline": 1, "system_identifier": "7311650800973885350",
        "cluster_state": "shut down", "last_checkpoint_lsn": "0/3000148",
        "fenced": True, "fence": {"fenced_at": "2026-11-24T08:20:00+00:00", "reason": "test"},
        "standby_of": None,
    }
    state.update(changes)
    return state


def redis_master(replicas=(), **changes):
    state = {
        "role": "master", "master_replid": "ddd18983822b33201d06d64e72770e2380ada401",
        "master_repl_offset": 1250,
        "connected_replicas": [{"ip": ADDRESS[name], "port": 6379, "state": "online",
                                "offset": 1200, "lag_bytes": 50, "lag_seconds": 1}
                               for name in replicas],
        "role_file": "/var/lib/redis/role.conf", "role_file_agrees": True,
    }
    state.update(changes)
    return state


def redis_replica(master, link="up", **changes):
    state = {
        "role": "replica", "master_host": ADDRESS[master], "master_port": 6379,
        "master_link_status": link,
        "master_link_down_seconds": None if link == "up" else 42,
        "master_replid": "ddd18983822b33201d06d64e72770e2380ada401",
        "replica_repl_offset": 1200,
        "master_repl_offset": 1250 if link == "up" else None,
        "lag_bytes": 50 if link == "up" else None,
        "role_file": "/var/lib/redis/role.conf", "role_file_agrees": True,
    }
    state.update(changes)
    return state


def healthy_cluster(primary=S1, standby=S2):
    """pg_states and redis_states of a healthy pair with primary recorded."""
    pg_states = {primary: pg_primary(primary, {standby: "streaming"}),
                 standby: pg_standby(standby, primary)}
    redis_states = {primary: redis_master([standby]), standby: redis_replica(primary)}
    return pg_states, redis_states


# --- parse_lsn -----------------------------------------------------------------------


@pytest.mark.parametrize("text, position", [
    ("0/0", 0),
    ("0/3000148", 0x3000148),
    ("0/FFFFFFFF", 0xFFFFFFFF),
    ("1/0", 1 << 32),
    ("1A/FF", (0x1A << 32) | 0xFF),
    ("16/b374d848", (0x16 << 32) | 0xB374D848),  # lower-case hex, as some tools print
    (" 0/3000148\n", 0x3000148),  # surrounding whitespace, as read from a command
])
def test_parse_lsn_reads_high_and_low_hexadecimal_parts(text, position):
    assert parse_lsn(text) == position


def test_parse_lsn_orders_the_high_part_before_the_low_part():
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")
    assert parse_lsn("1/0") - parse_lsn("0/FFFFFFFF") == 1


@pytest.mark.parametrize("text", ["", "3000148", "0/", "/0", "0/xyz", "1/2/3",
                                  "0/100000000", "-1/0", "0x1/0"])
def test_parse_lsn_refuses_malformed_text(text):
    with pytest.raises(ValueError):
        parse_lsn(text)


# --- received_everything -------------------------------------------------------------


@pytest.mark.parametrize("checkpoint, received, expected", [
    ("0/3000148", "0/3000148", True),    # exactly the checkpoint record's start
    ("0/3000148", "0/3000200", True),    # beyond it
    ("0/3000148", "0/3000147", False),   # one byte before: the checkpoint is missing
    ("0/3000148", "0/2000000", False),   # far behind
    ("1/0", "0/FFFFFFFF", False),        # one byte before, across the high part
    ("0/FFFFFFFF", "1/0", True),         # past it, across the high part
    ("1/10", "2/0", True),
    ("2/0", "1/FFFFFFFF", False),
])
def test_received_everything_compares_positions(checkpoint, received, expected):
    assert received_everything(checkpoint, received) is expected


def test_a_standby_that_reports_no_received_position_has_not_received_everything():
    assert received_everything("0/3000148", None) is False


def test_received_everything_compares_numbers_not_text():
    # As text, "0/9000000" sorts after "0/10000000".
    assert received_everything("0/9000000", "0/10000000") is True
    assert received_everything("0/10000000", "0/9000000") is False


# --- switch_proves_no_loss -----------------------------------------------------------


@pytest.mark.parametrize("checkpoint, switch, expected", [
    ("0/3000060", "0/30000D8", True),    # new timeline after the checkpoint record
    ("0/3000060", "0/3000060", False),   # at the checkpoint: the record was not replayed
    ("0/3000060", "0/3000000", False),   # before it
    ("0/FFFFFFF0", "1/28", True),        # across the high part
    ("1/28", "0/FFFFFFF0", False),
])
def test_switch_proves_no_loss_only_after_the_checkpoint(checkpoint, switch, expected):
    assert switch_proves_no_loss(checkpoint, switch) is expected


# --- failover_decision: planned ------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_running_primary_and_a_running_standby_make_a_planned_failover(force):
    decision = failover_decision(S1, S2, True, pg_standby(S2, S1), force)
    assert decision == {"mode": "planned", "refused": None, "at_risk": None, "lag_bytes": None,
                        "resumed": False}


def test_a_planned_failover_ignores_mined_positions_and_the_lag_bound():
    # The primary runs: the planned switch checks the checkpoint itself, so
    # a lagging standby is no reason to refuse (it catches up after the shutdown).
    decision = failover_decision(S1, S2, True, pg_standby(S2, S1, received_lsn="0/1000000"),
                                 False, "0/9000000", "2026-11-24T08:25:36+00:00", 0)
    assert decision["mode"] == "planned"
    assert decision["refused"] is None


# --- failover_decision: the candidate is not a running standby ------------------------


@pytest.mark.parametrize("current_up", [True, False])
@pytest.mark.parametrize("force", [False, True])
def test_a_candidate_that_does_not_answer_is_refused_by_name(current_up, force):
    decision = failover_decision(S1, S2, current_up, None, force, "0/3000148")
    assert decision["refused"]
    assert S2 in decision["refused"]
    assert "does not answer" in decision["refused"]
    assert decision["mode"] == ("planned" if current_up else "unplanned")


@pytest.mark.parametrize("candidate_state,current_up", [
    (pg_primary(S2), True),
    (pg_stopped(S2), True),
    (pg_stopped(S2), False),
], ids=["primary beside a primary", "stopped", "stopped, primary down"])
def test_a_candidate_that_is_not_a_standby_is_refused_even_with_force(candidate_state,
                                                                      current_up):
    decision = failover_decision(S1, S2, current_up, candidate_state, True, "0/3000148")
    assert decision["refused"]
    assert S2 in decision["refused"]
    assert f"is {candidate_state['role']}, not a running standby" in decision["refused"]
    assert f"salt {S2} pg_replication.status" in decision["refused"]


def test_a_candidate_an_earlier_forced_run_promoted_is_resumed_without_new_risk():
    decision = failover_decision(S1, S2, False, pg_primary(S2, timeline=2), force=False)
    assert decision["resumed"] and decision["refused"] is None and decision["at_risk"] is None


def test_a_fenced_candidate_is_refused_even_with_force():
    fenced = pg_standby(S2, S1, fenced=True,
                        fence={"fenced_at": "2026-11-24T08:20:00+00:00", "reason": "guard"})
    for current_up in (True, False):
        decision = failover_decision(S1, S2, current_up, fenced, force=True)
        assert "fenced" in decision["refused"] and "orch.failback" in decision["refused"]


def test_a_candidate_that_reports_no_received_position_cannot_tell_the_loss():
    decision = failover_decision(S1, S2, False, pg_standby(S2, S1, received_lsn=None),
                                 force=True, last_primary_lsn="0/3000148")
    assert decision["refused"] is None and decision["lag_bytes"] is None
    assert "reports no received position" in decision["at_risk"]
    assert "0/3000148" in decision["at_risk"] and "None" not in decision["at_risk"]


def test_a_candidate_state_without_a_role_is_refused():
    decision = failover_decision(S1, S2, True, {}, False)
    assert decision["refused"] and "not a running standby" in decision["refused"]


# --- failover_decision: unplanned -----------------------------------------------------

LAST_SEEN = "2026-11-24T08:25:36+00:00"


def unplanned(force, last="0/3000148", received="0/3000100", seen=LAST_SEEN, max_lag=None):
    return failover_decision(S1, S2, False, pg_standby(S2, S1, received_lsn=received), force,
                             last, seen, max_lag)


def test_an_unplanned_failover_without_force_is_refused_with_how_to_force_it():
    decision = unplanned(force=False)
    assert decision["mode"] == "unplanned"
    assert decision["refused"].startswith("unplanned failover refused")
    assert "salt-run state.orchestrate orch.failover pillar='{\"force\": true}'" \
        in decision["refused"]


def test_the_force_pillar_in_the_refusal_is_valid_json():
    refused = unplanned(force=False)["refused"]
    pillar = re.search(r"pillar='([^']*)'", refused).group(1)
    assert json.loads(pillar) == {"force": True}


def test_an_unforced_refusal_says_what_is_at_risk():
    decision = unplanned(force=False, last="0/3000148", received="0/3000100")
    at_risk = decision["at_risk"]
    assert "0/3000148" in at_risk and "0/3000100" in at_risk
    assert "72 bytes of WAL are known to be missing" in at_risk  # 0x148 - 0x100
    assert LAST_SEEN in at_risk
    assert S1 in at_risk and S2 in at_risk
    assert "Redis" in at_risk
    assert at_risk in decision["refused"]
    assert decision["lag_bytes"] == 72


def test_the_missing_byte_count_spans_the_high_part_of_the_lsn():
    decision = unplanned(force=False, last="1/0", received="0/FFFFFFFF")
    assert decision["lag_bytes"] == 1
    assert "1 bytes of WAL are known to be missing" in decision["at_risk"]


def test_an_unknown_last_seen_time_is_said_so():
    assert "time unknown" in unplanned(force=False, seen=None)["at_risk"]


def test_a_candidate_ahead_of_the_last_known_position_has_all_of_it():
    decision = unplanned(force=False, last="0/3000100", received="0/3000148")
    assert decision["lag_bytes"] == 0
    assert f"{S2} has all of it" in decision["at_risk"]
    assert "known to be missing" not in decision["at_risk"]
    assert decision["refused"]  # without force, still refused: later commits may be lost


@pytest.mark.parametrize("max_lag", [None, 72, 73, 16 * 1024 ** 2])
def test_a_forced_failover_within_the_lag_bound_proceeds_unplanned(max_lag):
    decision = unplanned(force=True, last="0/3000148", received="0/3000100", max_lag=max_lag)
    assert decision["refused"] is None
    assert decision["mode"] == "unplanned"
    assert decision["lag_bytes"] == 72
    assert "72 bytes" in decision["at_risk"]  # the operator still sees what was lost


@pytest.mark.parametrize("max_lag", [0, 71])
def test_a_forced_failover_beyond_the_lag_bound_is_refused(max_lag):
    decision = unplanned(force=True, last="0/3000148", received="0/3000100", max_lag=max_lag)
    refused = decision["refused"]
    assert refused.startswith("unplanned failover refused even with force")
    assert "72 bytes of WAL" in refused
    assert f"failover:max_lag_bytes ({max_lag})" in refused
    assert S2 in refused and f"Bring {S1} back" in refused
    assert decision["lag_bytes"] == 72


def test_the_lag_override_hint_is_valid_json_and_lets_the_failover_proceed():
    refused = unplanned(force=True, last="1/0", received="0/F0000000", max_lag=1024)["refused"]
    pillar = json.loads(re.search(r"pillar='([^']*)'", refused).group(1))
    lag = (1 << 32) - 0xF0000000
    assert pillar == {"force": True, "max_lag_bytes": lag}
    retried = unplanned(force=pillar["force"], last="1/0", received="0/F0000000",
                        max_lag=pillar["max_lag_bytes"])
    assert retried["refused"] is None


def test_a_forced_failover_with_an_unknown_last_position_proceeds():
    decision = unplanned(force=True, last=None, seen=None, max_lag=0)
    assert decision["refused"] is None
    assert decision["mode"] == "unplanned"
    assert decision["lag_bytes"] is None
    assert "knows no recent WAL position" in decision["at_risk"]
    assert "0/3000100" in decision["at_risk"]  # what the candidate has


def test_an_unforced_failover_with_an_unknown_last_position_is_refused():
    decision = unplanned(force=False, last=None, seen=None)
    assert "knows no recent WAL position" in decision["refused"]
    assert "pillar='{\"force\": true}'" in decision["refused"]


# --- topology_problems ---------------------------------------------------------------


@pytest.mark.parametrize("primary, standby", [(S1, S2), (S2, S1)],
                         ids=["preferred", "after-failover"])
def test_a_healthy_pair_has_no_problems(primary, standby):
    pg_states, redis_states = healthy_cluster(primary, standby)
    assert topology_problems(primary, pg_states, redis_states, set()) == []


def test_two_postgresql_primaries_are_a_problem():
    pg_states, redis_states = healthy_cluster()
    pg_states[S2] = pg_primary(S2)
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert f"PostgreSQL primaries: {S1}, {S2} (expected only {S1})" in problems


def test_a_primary_other_than_the_recorded_node_is_a_problem():
    pg_states, redis_states = healthy_cluster(S2, S1)  # the cluster runs on S2 ...
    problems = topology_problems(S1, pg_states, redis_states, set())  # ... the record says S1
    assert f"PostgreSQL primaries: {S2} (expected only {S1})" in problems
    assert f"Redis masters: {S2} (expected only {S1})" in problems


def test_no_postgresql_primary_at_all_is_a_problem():
    pg_states, redis_states = healthy_cluster()
    pg_states[S1] = pg_stopped(S1)
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert f"PostgreSQL primaries: none (expected only {S1})" in problems


@pytest.mark.parametrize("walsender_state", [None, "startup", "catchup", "backup", "stopping"])
def test_a_standby_not_streaming_from_the_recorded_primary_is_a_problem(walsender_state):
    pg_states, redis_states = healthy_cluster()
    pg_states[S1] = pg_primary(S1, {S2: walsender_state} if walsender_state else {})
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert problems == [f"PostgreSQL on {S2} is standby, not a standby streaming from {S1}"]


def test_a_stopped_database_node_that_answers_is_a_problem():
    pg_states, redis_states = healthy_cluster()
    pg_states[S2] = pg_stopped(S2)
    pg_states[S1] = pg_primary(S1)
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert problems == [f"PostgreSQL on {S2} is stopped, not a standby streaming from {S1}"]


def test_a_redis_replica_with_its_link_down_is_a_problem():
    pg_states, redis_states = healthy_cluster()
    redis_states[S2] = redis_replica(S1, link="down")
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert problems == [f"Redis on {S2} is not a replica with its link to {S1} up"]


def test_a_redis_replica_of_another_address_is_a_problem():
    pg_states, redis_states = healthy_cluster()
    redis_states[S2] = redis_replica(S1, master_host="10.11.12.99")
    assert topology_problems(S1, pg_states, redis_states, set(), ADDRESS[S1]) == [
        f"Redis on {S2} is not a replica with its link to {S1} up"]
    assert topology_problems(S1, *healthy_cluster(), set(), ADDRESS[S1]) == []


def test_two_redis_masters_are_a_problem():
    pg_states, redis_states = healthy_cluster()
    redis_states[S2] = redis_master()
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert f"Redis masters: {S1}, {S2} (expected only {S1})" in problems
    assert f"Redis on {S2} is not a replica with its link to {S1} up" in problems


def test_no_redis_master_is_a_problem():
    pg_states, redis_states = healthy_cluster()
    redis_states[S1] = redis_replica(S2, link="down")
    problems = topology_problems(S1, pg_states, redis_states, set())
    assert f"Redis masters: none (expected only {S1})" in problems


def test_a_recorded_primary_that_does_not_answer_is_a_problem():
    pg_states = {S2: pg_standby(S2, S1, wal_receiver=None)}
    redis_states = {S2: redis_replica(S1, link="down")}
    problems = topology_problems(S1, pg_states, redis_states, {S1})
    assert f"{S1}, the recorded primary, does not answer" in problems
    assert f"PostgreSQL primaries: none (expected only {S1})" in problems


def test_a_down_former_primary_after_an_unplanned_failover_is_no_problem_by_itself():
    # orch.failover (forced) promoted S2 and recorded it; S1 is still off.
    pg_states = {S2: pg_primary(S2, timeline=2)}
    redis_states = {S2: redis_master()}
    assert topology_problems(S2, pg_states, redis_states, {S1}, fenced=[S1]) == []


def test_a_fenced_former_primary_a_forced_run_left_stopped_is_no_problem():
    pg_states = {S2: pg_primary(S2, timeline=2), S1: pg_stopped(S1)}
    redis_states = {S2: redis_master([S1]), S1: redis_replica(S2)}
    assert topology_problems(S2, pg_states, redis_states, set(), fenced=[S1]) == []
    assert topology_problems(S2, pg_states, redis_states, set()) == [
        f"PostgreSQL on {S1} is stopped, not a standby streaming from {S2}"]


def test_a_down_former_primary_not_known_fenced_is_a_problem():
    pg_states = {S2: pg_primary(S2, timeline=2)}
    redis_states = {S2: redis_master()}
    assert topology_problems(S2, pg_states, redis_states, {S1}) == [
        f"{S1} does not answer and is not known fenced: it may still take writes; check it, "
        "or power it off"]


def test_topology_problems_does_not_change_the_statuses_it_reads():
    pg_states, redis_states = healthy_cluster()
    pg_states[S2] = pg_primary(S2)
    before = copy.deepcopy((pg_states, redis_states))
    topology_problems(S1, pg_states, redis_states, {S1})
    assert (pg_states, redis_states) == before


# --- airflow_health_problems -----------------------------------------------------------

# Airflow 2's /health body.
HEALTHY = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy",
                  "latest_scheduler_heartbeat": "2026-11-24T08:25:36.123456+00:00"},
    "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
    "dag_processor": {"status": None, "latest_dag_processor_heartbeat": None},
}


def health(**parts):
    body = copy.deepcopy(HEALTHY)
    for part, status in parts.items():
        body[part]["status"] = status
    return body


def test_a_healthy_airflow_has_no_problems():
    assert airflow_health_problems(HEALTHY) == []


def test_airflow_3s_dag_processor_is_a_problem_once_its_heartbeat_is_stale():
    assert airflow_health_problems(health(dag_processor="healthy")) == []
    assert airflow_health_problems(health(dag_processor="unhealthy")) == [
        "dag_processor is unhealthy"]


def test_an_unhealthy_scheduler_is_a_problem():
    assert airflow_health_problems(health(scheduler="unhealthy")) == ["scheduler is unhealthy"]


def test_an_unhealthy_metadatabase_is_a_problem():
    assert airflow_health_problems(health(metadatabase="unhealthy")) == [
        "metadatabase is unhealthy"]


def test_both_unhealthy_are_both_reported_database_first():
    assert airflow_health_problems(health(metadatabase="unhealthy", scheduler="unhealthy")) == [
        "metadatabase is unhealthy", "scheduler is unhealthy"]


def test_the_triggerer_is_not_checked():
    assert airflow_health_problems(health(triggerer="unhealthy")) == []


@pytest.mark.parametrize("body, expected", [
    ({}, ["metadatabase is None", "scheduler is None"]),
    ({"metadatabase": {"status": "healthy"}}, ["scheduler is None"]),
    ({"metadatabase": {"status": "healthy"}, "scheduler": {}}, ["scheduler is None"]),
    ({"metadatabase": None, "scheduler": {"status": "healthy"}}, ["metadatabase is None"]),
])
def test_missing_parts_are_problems(body, expected):
    assert airflow_health_problems(body) == expected


def test_an_unanswered_health_check_reports_why():
    body = {"error": "<urlopen error [Errno 111] Connection refused>"}
    assert airflow_health_problems(body) == [
        "no answer (<urlopen error [Errno 111] Connection refused>)"]


# --- failback_decision and plan -------------------------------------------------------

PILLAR = {"cluster": {"primary": S1, "nodes": {
    S1: {"address": ADDRESS[S1], "roles": ["postgresql", "redis", "airflow-webserver"]},
    S2: {"address": ADDRESS[S2], "roles": ["postgresql", "redis", "airflow-scheduler"]},
    "airflow-worker1": {"address": "10.11.12.30", "roles": ["airflow-worker"]}}}}


def test_a_failback_to_the_current_primary_does_nothing():
    assert failback_decision(S1, S1, {S1, S2}, {}, True, ADDRESS[S1])["mode"] == "nothing"
    states = {S1: pg_primary(S1, {S2: "streaming"}), S2: pg_standby(S2, S1)}
    assert failback_decision(S1, S1, {S1, S2}, states, True, ADDRESS[S1])["mode"] == "nothing"


def test_a_failback_rerun_rejoins_the_node_an_earlier_run_left_fenced():
    states = {S1: pg_primary(S1), S2: pg_stopped(S2)}
    decision = failback_decision(S1, S1, {S1, S2}, states, True, ADDRESS[S1])
    assert decision == {"mode": "rejoin-only", "rejoin": S2, "refused": None}


def test_a_failback_rejoins_a_fenced_former_primary_even_while_it_streams():
    """Both servers down, the newer one unfenced: the stale one streams
    from it, still fenced; only a rejoin clears its fence."""
    states = {S1: pg_primary(S1, {S2: "streaming"}),
              S2: pg_standby(S2, S1, fenced=True, fence={"reason": "start guard: ..."})}
    decision = failback_decision(S1, S1, {S1, S2}, states, False, ADDRESS[S1])
    assert decision == {"mode": "rejoin-only", "rejoin": S2, "refused": None}


def test_a_failback_to_a_preferred_primary_that_does_not_answer_is_refused():
    decision = failback_decision(S2, S1, {S2}, {S2: pg_primary(S2)}, True, ADDRESS[S2])
    assert decision["refused"].startswith(f"{S1}, the preferred primary, does not answer")


def test_a_failback_from_a_primary_that_is_not_running_is_refused():
    states = {S1: pg_standby(S1, S2), S2: pg_standby(S2, S1)}
    decision = failback_decision(S2, S1, {S1, S2}, states, True, ADDRESS[S2])
    assert decision["refused"].startswith(f"{S2}, the current primary, is not a running primary")


@pytest.mark.parametrize("following", [S2, ADDRESS[S2]])
def test_a_streaming_preferred_primary_needs_no_rejoin_whether_named_or_addressed(following):
    states = {S2: pg_primary(S2, {S1: "streaming"}), S1: pg_standby(S1, following)}
    decision = failback_decision(S2, S1, {S1, S2}, states, True, ADDRESS[S2])
    assert decision == {"mode": "planned", "rejoin": None, "refused": None}


def test_a_fenced_preferred_primary_is_rejoined_first():
    states = {S2: pg_primary(S2), S1: pg_primary(S1, role="stopped", fenced=True)}
    decision = failback_decision(S2, S1, {S1, S2}, states, False, ADDRESS[S2])
    assert decision == {"mode": "rejoin-only", "rejoin": S1, "refused": None}


def test_the_plan_of_a_planned_failover_names_both_servers_and_the_down_nodes():
    states = {S1: pg_primary(S1, {S2: "streaming"}), S2: pg_standby(S2, S1)}
    result = plan(Cluster(PILLAR), "failover", {S1, S2}, states,
                  redis_states={S2: redis_replica(S1)})
    assert (result["mode"], result["old"], result["new"], result["refused"]) == (
        "planned", S1, S2, None)
    assert result["down"] == ["airflow-worker1"]
    assert result["airflow_nodes"] == [S1, S2, "airflow-worker1"]


def test_the_plan_takes_the_lag_bound_from_the_pillar():
    pillar = dict(PILLAR, failover={"max_lag_bytes": 10})
    states = {S2: pg_standby(S2, S1, received_lsn="0/3000000")}
    result = plan(Cluster(pillar), "failover", {S2}, states, force=True,
                  last_primary_lsn="0/3000100")
    assert "failover:max_lag_bytes (10)" in result["refused"]


def test_the_plan_follows_the_topology_record():
    pillar = dict(PILLAR, topology={"primary": S2})
    states = {S2: pg_primary(S2, {S1: "streaming"}), S1: pg_standby(S1, S2)}
    result = plan(Cluster(pillar), "failback", {S1, S2}, states)
    assert (result["old"], result["new"], result["mode"]) == (S2, S1, "planned")


def test_an_invalid_pillar_refuses_the_plan_with_the_validation_message():
    rendered = ["Rendering SLS 'base:validate' failed: Jinja error: cluster:primary is missing"
                "\nTraceback (most recent call last): ..."]
    refusal = pillar_refusal(rendered)
    assert refusal == "the pillar is invalid: cluster:primary is missing"
    assert plan(Cluster(PILLAR), "failover", {S1, S2}, {}, refusal=refusal)["refused"] == refusal


def test_a_valid_pillar_is_no_refusal():
    assert pillar_refusal({"validate": {}}) is None
    assert pillar_refusal(None) is None


# --- unfence_decision and guard-fenced primaries ---------------------------------------

from ha_core.failover import unfence_decision  # noqa: E402


def rec(primary, generation):
    return {"primary": primary, "generation": generation}


def test_the_writer_is_the_node_the_newest_record_names():
    states = {S1: pg_primary(S1, role="standby", timeline=1),
              S2: pg_primary(S2, role="standby", timeline=2)}
    decision = unfence_decision(rec(S1, 1), {S1: rec(S1, 1), S2: rec(S2, 2)}, states)
    assert decision == {"writer": S2, "generation": 2, "refused": None}


def test_a_lost_master_record_is_outvoted_by_the_copies():
    states = {S2: pg_primary(S2, role="standby", timeline=2)}
    assert unfence_decision(None, {S2: rec(S2, 2)}, states)["writer"] == S2


def test_the_writer_must_answer():
    decision = unfence_decision(rec(S2, 2), {S1: rec(S1, 1)}, {S1: pg_primary(S1)})
    assert decision["refused"].startswith(f"{S2}, which the newest record (generation 2)")


def test_a_node_on_a_later_timeline_than_the_writer_is_refused():
    states = {S1: pg_primary(S1, timeline=3), S2: pg_primary(S2, timeline=2)}
    decision = unfence_decision(rec(S2, 2), {}, states)
    assert decision["refused"].startswith(f"{S1} is on a later timeline than {S2}")


def test_records_of_one_generation_naming_two_nodes_are_refused():
    states = {S1: pg_primary(S1), S2: pg_primary(S2)}
    decision = unfence_decision(None, {S1: rec(S1, 2), S2: rec(S2, 2)}, states)
    assert "records of generation 2 name airflow-server1, airflow-server2" in decision["refused"]


def test_no_record_anywhere_and_the_wrong_node_are_refused():
    assert "no topology record anywhere" in unfence_decision(None, {S1: None}, {})["refused"]
    states = {S1: pg_primary(S1), S2: pg_primary(S2)}
    assert unfence_decision(rec(S2, 2), {}, states, node=S1)["refused"] == (
        f"{S1} is not the writer: the newest record (generation 2) names {S2}")


def test_a_recorded_primary_fenced_by_its_guard_is_a_problem_naming_unfence():
    fence = {"fenced_at": "2026-11-30T09:00:00+00:00",
             "reason": "start guard: airflow-server1 starts fenced, in recovery: ..."}
    states = {S1: pg_primary(S1, role="standby", fenced=True, fence=fence),
              S2: pg_standby(S2, S1)}
    problems = topology_problems(S1, states, {}, set())
    assert any("was fenced by its start guard" in problem
               and problem.endswith("salt-run airflow_ha.unfence") for problem in problems)


# --- switchover_blockers ----------------------------------------------------------------

from ha_core.failover import switchover_blockers  # noqa: E402


def test_a_streaming_candidate_with_a_following_redis_may_take_over():
    assert switchover_blockers(S2, pg_primary(S1, {S2: "streaming"}),
                               redis_replica(S1), 1000) == []


@pytest.mark.parametrize("standbys, expected", [
    ({}, "not streaming from the primary (not connected)"),
    ({S2: "catchup"}, "not streaming from the primary (catchup)"),
])
def test_a_candidate_not_streaming_is_refused_up_front(standbys, expected):
    blockers = switchover_blockers(S2, pg_primary(S1, standbys), redis_replica(S1), 1000)
    assert blockers == [f"{S2}'s PostgreSQL is {expected}"]


def test_a_candidate_lagging_beyond_the_bound_is_refused_up_front():
    primary = pg_primary(S1, {S2: "streaming"})
    primary["standbys"][0]["lag_bytes"] = 5000
    assert "5000 bytes behind" in switchover_blockers(S2, primary, redis_replica(S1),
                                                      1000)[0]


def test_a_candidate_redis_down_or_unlinked_is_refused_up_front():
    primary = pg_primary(S1, {S2: "streaming"})
    assert switchover_blockers(S2, primary, None, 1000) == [f"{S2}'s Redis does not answer"]
    assert switchover_blockers(S2, primary, redis_replica(S1, link="down"), 1000) == [
        f"{S2}'s Redis is not a replica with its link up"]


def test_the_plan_refuses_a_planned_switch_to_a_standby_that_does_not_stream():
    states = {S1: pg_primary(S1), S2: pg_standby(S2, S1)}
    result = plan(Cluster(PILLAR), "failover", {S1, S2}, states,
                  redis_states={S2: redis_replica(S1)})
    assert result["refused"].startswith(f"planned switch to {S2} refused before changing anything")

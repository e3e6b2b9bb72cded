"""ha_core.failover under faults, without servers: fence before promote
(which proof an unplanned failover takes, signs of life), finishing a switch
an earlier run began, the bound on a forced Redis promotion."""

import json
import re

import pytest

from ha_core.cluster import Cluster
from ha_core.failover import (fence_method, finish_decision, plan, redis_loss,
                              resume_decision, signs_of_life)
from tests.unit.test_failover import (PILLAR, S1, S2, pg_primary, pg_standby, pg_stopped,
                                      redis_master, redis_replica)

AGENT = "/usr/local/sbin/fence-by-ipmi"
CRASHED = {"role": "stopped", "running": False, "cluster_state": "in production"}


def pillar_in(refusal):
    """The pillar a refusal tells the operator to pass, parsed."""
    return json.loads(re.search(r"pillar='([^']*)'", refusal).group(1))


# --- signs of life --------------------------------------------------------------------


def test_a_streaming_wal_receiver_and_an_up_redis_link_are_signs_of_life():
    signs = signs_of_life(S2, pg_standby(S2, S1), redis_replica(S1))
    assert signs == [f"the WAL receiver on {S2} is streaming from it",
                     f"Redis on {S2} has its link to it up"]


def test_a_standby_without_a_wal_receiver_and_a_broken_link_show_no_life():
    assert signs_of_life(S2, pg_standby(S2, S1, wal_receiver=None),
                         redis_replica(S1, link="down")) == []
    assert signs_of_life(S2, None, None) == []


# --- fence_method -----------------------------------------------------------------------


@pytest.mark.parametrize("agent", [None, AGENT])
def test_a_former_primary_whose_minion_answers_fences_itself(agent):
    assert fence_method(S1, True, agent, None, ["alive"]) == ("minion", None)


def test_a_silent_primary_without_an_agent_or_the_operators_word_is_refused():
    method, refusal = fence_method(S1, False, None, None, [])
    assert method is None
    assert "nothing proves that it takes no writes" in refusal
    assert "Nothing was changed" in refusal and "failover:fence" in refusal
    assert pillar_in(refusal) == {"force": True, "fenced": S1}


def test_the_refusal_names_the_signs_of_life_it_saw():
    sign = f"the WAL receiver on {S2} is streaming from it"
    assert sign in fence_method(S1, False, None, None, [sign])[1]


def test_a_fence_agent_fences_a_silent_primary_even_one_that_runs():
    assert fence_method(S1, False, AGENT, None, ["alive"]) == ("agent", None)


def test_the_operators_word_stands_when_no_sign_of_life_contradicts_it():
    assert fence_method(S1, False, None, S1, []) == ("operator", None)
    assert fence_method(S1, False, AGENT, S1, []) == ("operator", None)


def test_the_operators_word_is_refused_while_the_primary_shows_life():
    method, refusal = fence_method(S1, False, AGENT, S1, ["Redis on x has its link to it up"])
    assert method is None
    assert f"{S1} was named fenced, but it runs: Redis on x has its link" in refusal
    assert "wal_receiver_timeout" in refusal


def test_naming_another_node_fenced_is_refused():
    method, refusal = fence_method(S1, False, None, S2, [])
    assert method is None and f"fenced names {S2}" in refusal and S1 in refusal


# --- resume_decision --------------------------------------------------------------------


def test_a_standby_that_received_the_shutdown_checkpoint_may_be_promoted():
    decision = resume_decision(S1, S2, pg_stopped(S1, last_checkpoint_lsn="0/3000148"),
                               pg_standby(S2, S1, received_lsn="0/3000148"))
    assert (decision["mode"], decision["refused"], decision["resumed"]) == ("resume", None, True)


def test_a_standby_short_of_the_shutdown_checkpoint_is_refused_with_the_unfence_command():
    decision = resume_decision(S1, S2, pg_stopped(S1, last_checkpoint_lsn="0/3000148"),
                               pg_standby(S2, S1, received_lsn="0/3000100"))
    assert decision["lag_bytes"] == 0x48
    assert "received only up to 0/3000100" in decision["refused"]
    assert "Nothing was changed" in decision["refused"]
    assert f"salt-run airflow_ha.unfence {S1}" in decision["refused"]


def test_a_candidate_promoted_past_everything_the_old_primary_holds_is_finished():
    divergence = {"discarded_bytes": 0, "discarded_lsn_range": None, "fork_lsn": "0/3000148"}
    decision = resume_decision(S1, S2, pg_stopped(S1), pg_primary(S2, timeline=2), divergence)
    assert decision["refused"] is None


def test_a_promoted_candidate_that_lacks_commits_of_the_old_primary_is_refused():
    divergence = {"discarded_bytes": 72, "discarded_lsn_range": "0/3000100-0/3000148",
                  "fork_lsn": "0/3000100"}
    refusal = resume_decision(S1, S2, pg_stopped(S1), pg_primary(S2, timeline=2),
                              divergence)["refused"]
    assert "72 bytes of WAL past the fork (0/3000100-0/3000148)" in refusal
    assert "orch.failback" in refusal


@pytest.mark.parametrize("candidate", [None, pg_stopped(S2),
                                       pg_standby(S2, S1, fenced=True)])
def test_no_standby_to_promote_is_refused_with_how_to_bring_the_old_primary_back(candidate):
    refusal = resume_decision(S1, S2, pg_stopped(S1), candidate)["refused"]
    assert f"salt-run airflow_ha.unfence {S1}" in refusal


# --- redis_loss -------------------------------------------------------------------------


def test_a_handover_the_master_can_do_loses_nothing():
    assert redis_loss(S2, redis_replica(S1), 99999, True, 0) == (0, None)


def test_a_replica_within_the_bound_is_promoted_with_its_lag_reported():
    assert redis_loss(S2, redis_replica(S1, link="down", replica_repl_offset=1200), 1250,
                      False, 100) == (50, None)


def test_a_replica_beyond_the_bound_is_refused_with_the_pillar_that_accepts_the_loss():
    lag, refusal = redis_loss(S2, redis_replica(S1, link="down", replica_repl_offset=1200),
                              5200, False, 1000)
    assert lag == 4000
    assert "4000 bytes behind" in refusal and "failover:max_redis_lag_bytes (1000)" in refusal
    assert pillar_in(refusal) == {"force": True, "max_redis_lag_bytes": 4000}
    assert redis_loss(S2, redis_replica(S1, link="down", replica_repl_offset=1200), 5200,
                      False, 4000) == (4000, None)


def test_an_unknown_master_offset_cannot_be_bounded_and_is_said_unknown():
    assert redis_loss(S2, redis_replica(S1, link="down"), None, False, 0) == (None, None)


def test_a_candidate_redis_that_is_not_a_replica_is_refused():
    assert redis_loss(S2, None, 1, False, 10)[1].startswith(f"Redis on {S2} does not answer")
    assert redis_loss(S2, redis_master(), 1, False, 10) == (0, None)  # promoted earlier


# --- plan: the failover's mode and proof --------------------------------------------------


def failover_plan(pg_states, answering=(S2,), pillar=PILLAR, redis_states=None, **options):
    return plan(Cluster(pillar), "failover", set(answering), pg_states, force=True,
                redis_states=redis_states or {S2: redis_replica(S1, link="down")}, **options)


def test_a_forced_failover_of_a_silent_primary_is_refused_without_proof():
    result = failover_plan({S2: pg_standby(S2, S1)})
    assert result["mode"] == "unplanned" and result["fence"] is None
    assert "nothing proves that it takes no writes" in result["refused"]
    assert result["signs_of_life"] == [f"the WAL receiver on {S2} is streaming from it"]


def test_a_forced_failover_uses_the_fence_agent_of_the_pillar():
    pillar = dict(PILLAR, failover={"fence": AGENT})
    result = failover_plan({S2: pg_standby(S2, S1)}, pillar=pillar)
    assert (result["fence"], result["refused"]) == ("agent", None)


def test_a_forced_failover_of_a_crashed_primary_whose_minion_answers_fences_it_there():
    result = failover_plan({S1: pg_stopped(S1, **CRASHED), S2: pg_standby(S2, S1)},
                           answering=(S1, S2))
    assert (result["mode"], result["fence"], result["refused"]) == ("unplanned", "minion", None)


def test_an_operator_named_fenced_primary_still_streaming_is_refused():
    result = failover_plan({S2: pg_standby(S2, S1)}, fenced=S1)
    assert f"{S1} was named fenced, but it runs" in result["refused"]


def test_the_redis_bound_refuses_a_forced_failover_from_the_mined_offset():
    pillar = dict(PILLAR, failover={"fence": AGENT, "max_redis_lag_bytes": 10})
    result = failover_plan({S2: pg_standby(S2, S1, wal_receiver=None)}, pillar=pillar,
                           last_redis_offset=1300)
    assert result["redis_lag_bytes"] == 100 and "100 bytes behind" in result["refused"]


def test_the_live_offset_of_an_answering_redis_master_beats_the_mine():
    pillar = dict(PILLAR, failover={"max_redis_lag_bytes": 10})
    result = failover_plan({S1: pg_stopped(S1, **CRASHED), S2: pg_standby(S2, S1)},
                           answering=(S1, S2), pillar=pillar,
                           redis_states={S1: redis_master(master_repl_offset=1205),
                                         S2: redis_replica(S1, link="down")},
                           last_redis_offset=999999)
    assert (result["redis_lag_bytes"], result["refused"]) == (5, None)


def test_a_cleanly_shut_down_primary_resumes_the_planned_switch_without_force():
    states = {S1: pg_stopped(S1, last_checkpoint_lsn="0/3000148"),
              S2: pg_standby(S2, S1, received_lsn="0/3000148")}
    result = plan(Cluster(PILLAR), "failover", {S1, S2}, states,
                  redis_states={S1: redis_master([S2]), S2: redis_replica(S1)})
    assert (result["mode"], result["refused"]) == ("resume", None)


def test_a_half_switched_pair_is_finished_after_the_divergence_check():
    states = {S1: pg_stopped(S1), S2: pg_primary(S2, timeline=2)}
    asked = []

    def divergence_of(node, primary):
        asked.append((node, primary))
        return {"discarded_bytes": 0, "discarded_lsn_range": None, "fork_lsn": "0/3000148"}

    result = plan(Cluster(PILLAR), "failover", {S1, S2}, states, divergence_of=divergence_of,
                  redis_states={S1: redis_master(), S2: redis_replica(S1, link="down")})
    assert (result["mode"], result["refused"]) == ("resume", None)
    assert asked == [(S1, S2)]


@pytest.mark.parametrize("switch_back", [True, False])
def test_a_failback_that_would_discard_wal_names_the_consent_with_the_operators_choice(
        switch_back):
    """The refusal's command consents to exactly the range and keeps
    whether the operator asked to switch back."""
    states = {S2: pg_primary(S2, timeline=2), S1: pg_stopped(S1, fenced=True)}

    def divergence_of(node, primary):
        return {"discarded_bytes": 72, "discarded_lsn_range": "0/3000100-0/3000148",
                "fork_lsn": "0/3000100"}

    pillar = dict(PILLAR, topology={"primary": S2})
    result = plan(Cluster(pillar), "failback", {S1, S2}, states, switch_back=switch_back,
                  divergence_of=divergence_of)
    assert "would discard 72 bytes of its WAL" in result["refused"]
    consent = {"discard": "0/3000100-0/3000148"} | ({} if switch_back else {"switch_back": False})
    assert pillar_in(result["refused"]) == consent
    consented = plan(Cluster(pillar), "failback", {S1, S2}, states, switch_back=switch_back,
                     divergence_of=divergence_of, discard=consent["discard"])
    assert consented["refused"] is None and consented["rejoin"] == S1


# --- finish: an earlier run recorded the switch, then stopped -----------------------------


def recorded(reason, fenced=()):
    """The topology record an orch.failover from S1 to S2 wrote."""
    return {"primary": S2, "previous_primary": S1, "generation": 2, "reason": reason,
            "fenced": list(fenced)}


PLANNED = recorded(f"orch.failover: planned switch from {S1}")
FORCED = recorded(f"orch.failover (unplanned, forced): {S1} fenced agent", fenced=[S1])


def test_a_planned_run_stopped_after_recording_is_finished_with_the_rejoin():
    decision = finish_decision(PLANNED, S2, S1, pg_primary(S2, timeline=2), pg_stopped(S1),
                               True)
    assert (decision["mode"], decision["new"], decision["rejoin"]) == ("finish", S2, S1)
    assert decision["refused"] is None


def test_a_forced_run_is_finished_without_rejoining_the_node_it_fenced():
    decision = finish_decision(FORCED, S2, S1, pg_primary(S2, timeline=2), None, False)
    assert (decision["mode"], decision["rejoin"]) == ("finish", None)
    decision = finish_decision(FORCED, S2, S1, pg_primary(S2, timeline=2), pg_stopped(S1), True)
    assert decision["rejoin"] is None  # orch.failback rejoins it, with consent to any loss


def test_a_finished_run_lets_the_next_failover_start_a_new_switch():
    states = {S2: pg_primary(S2, {S1: "streaming"}, timeline=2), S1: pg_standby(S1, S2)}
    assert finish_decision(PLANNED, S2, S1, states[S2], states[S1], True) is None


def test_a_standby_that_rejoined_then_stopped_streaming_is_no_run_to_finish():
    """After the run, the standby followed the new timeline; a broken link
    now is a fault a planned switch must refuse over, not a run to finish."""
    cut_off = pg_standby(S1, S2, timeline=2, wal_receiver=None)
    assert finish_decision(PLANNED, S2, S1, pg_primary(S2, timeline=2), cut_off, True) is None
    assert finish_decision(FORCED, S2, S1, pg_primary(S2, timeline=2), cut_off, True) is None


def test_a_former_primary_still_on_the_old_timeline_or_fenced_is_a_run_to_finish():
    primary = pg_primary(S2, timeline=2)
    for state in (pg_standby(S1, S2, timeline=1, wal_receiver=None),
                  pg_standby(S1, S2, timeline=2, fenced=True)):
        assert finish_decision(PLANNED, S2, S1, primary, state, True)["mode"] == "finish"


@pytest.mark.parametrize("record", [
    None,
    {"primary": S2, "previous_primary": S1, "reason": "airflow_ha.unfence: the copies named"},
    {"primary": S2, "previous_primary": S1, "reason": "restored"},
])
def test_a_record_another_command_wrote_is_no_run_to_finish(record):
    assert finish_decision(record, S2, S1, pg_primary(S2), pg_stopped(S1), True) is None


def test_a_recorded_primary_that_does_not_run_is_no_run_to_finish():
    assert finish_decision(PLANNED, S2, S1, pg_stopped(S2), pg_standby(S1, S2), True) is None


def test_the_failover_plan_finishes_before_it_considers_a_new_switch():
    pillar = dict(PILLAR, topology=PLANNED)
    states = {S2: pg_primary(S2, timeline=2), S1: pg_stopped(S1)}
    result = plan(Cluster(pillar), "failover", {S1, S2}, states,
                  redis_states={S2: redis_master([S1]), S1: redis_replica(S2)})
    assert (result["mode"], result["old"], result["new"], result["rejoin"]) == \
        ("finish", S2, S2, S1)

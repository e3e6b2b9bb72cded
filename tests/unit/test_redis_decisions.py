"""ha_core.redis_decisions: whether and how a replica is promoted, which
FAILOVER makes its master hand over to it and where the handover stands, and
whether a node may follow another."""

import pytest

from ha_core import errors, redis_decisions, redis_facts
from tests.unit.test_redis_facts import (
    MASTER_INFO,
    PROMOTED_INFO,
    REPLICA_INFO,
    REPLICA_LINK_DOWN_INFO,
    REPLICAS,
)


def info_of(info_text):
    return redis_facts.parse_replication_info(info_text)


def status_of(info_text):
    return redis_facts.status_from_info(info_of(info_text))


def test_promoting_a_master_is_refused():
    with pytest.raises(errors.Refused, match="already a master"):
        redis_decisions.promotion_method(status_of(MASTER_INFO), None, None, force=True)


def test_a_replica_whose_master_answers_is_promoted_by_failover_even_if_forced():
    for force in (False, True):
        method = redis_decisions.promotion_method(
            status_of(REPLICA_INFO), "10.11.12.10:6379", None, force)
        assert method == "failover"


def test_a_replica_with_its_link_down_to_a_master_that_answers_is_not_promoted():
    with pytest.raises(errors.Refused, match="link to it is down"):
        redis_decisions.promotion_method(
            status_of(REPLICA_LINK_DOWN_INFO), "10.11.12.10:6379", None, force=True)


def test_promotion_without_the_master_needs_force_and_says_what_may_be_lost():
    replica = status_of(REPLICA_LINK_DOWN_INFO)
    with pytest.raises(errors.Refused) as refused:
        redis_decisions.promotion_method(
            replica, "10.11.12.10:6379", "Connection refused", force=False)
    message = str(refused.value)
    assert "master 10.11.12.10:6379 is unreachable (Connection refused)" in message
    assert "force=True" in message and "may lose" in message
    assert "offset 1200" in message and "down for 42 s" in message
    forced = redis_decisions.promotion_method(
        replica, "10.11.12.10:6379", "Connection refused", force=True)
    assert forced == "forced"


def test_only_a_master_hands_over():
    redis_decisions.check_handover_source("10.11.12.10:6379", info_of(MASTER_INFO))
    with pytest.raises(errors.Refused, match=r"10.11.12.30:6379, which this node follows, is "
                                             r"itself a replica of 10.11.12.10:6379"):
        redis_decisions.check_handover_source("10.11.12.30:6379", info_of(REPLICA_INFO))


def test_failover_names_this_node_when_the_master_lists_it():
    command, follow = redis_decisions.failover_command(REPLICAS, "10.11.12.20", 6379, 30000)
    assert command == ["FAILOVER", "TO", "10.11.12.20", 6379, "TIMEOUT", 30000]
    assert follow == "10.11.12.20"


def test_failover_without_target_when_the_only_replica_is_seen_under_another_address():
    command, follow = redis_decisions.failover_command(REPLICAS[:1], "192.0.2.7", 6379, 5000)
    assert command == ["FAILOVER", "TIMEOUT", 5000]
    assert follow == "10.11.12.20"


def test_failover_is_refused_when_this_node_is_not_among_several_replicas():
    listed = r"not among .* \(10.11.12.20:6379, 10.11.12.30:6379\)"
    with pytest.raises(errors.Refused, match=listed):
        redis_decisions.failover_command(REPLICAS, "192.0.2.7", 6379, 5000)


def test_a_handover_is_done_once_the_old_master_follows_the_new_one():
    # The old master (10.11.12.10) now follows this node, seen as 10.11.12.20.
    old_master = info_of(REPLICA_INFO.replace("master_host:10.11.12.10",
                                              "master_host:10.11.12.20"))
    assert redis_decisions.handover_state(
        old_master, info_of(PROMOTED_INFO), "10.11.12.20", 6379) == "done"
    assert redis_decisions.handover_state(
        old_master, info_of(REPLICA_INFO), "10.11.12.20", 6379) == "under way"


def test_a_handover_is_aborted_when_the_old_master_is_master_without_a_failover():
    assert redis_decisions.handover_state(
        info_of(MASTER_INFO), info_of(REPLICA_INFO), "10.11.12.20", 6379) == "aborted"
    in_progress = info_of(MASTER_INFO.replace("no-failover", "failover-in-progress"))
    assert redis_decisions.handover_state(
        in_progress, info_of(REPLICA_INFO), "10.11.12.20", 6379) == "under way"


def test_a_node_follows_only_a_master_that_answers():
    redis_decisions.check_new_master("10.11.12.10:6379", info_of(MASTER_INFO), None)
    with pytest.raises(errors.Unreachable, match=r"Cannot reach 10.11.12.10:6379 \(timed out\); "
                                                 "this node was left unchanged"):
        redis_decisions.check_new_master("10.11.12.10:6379", None, "timed out")
    with pytest.raises(errors.Refused, match=r"10.11.12.20:6379 is not a master \(it follows "
                                             r"10.11.12.10:6379\); follow the master"):
        redis_decisions.check_new_master("10.11.12.20:6379", info_of(REPLICA_INFO), None)


def test_a_replica_of_a_replica_is_promoted_by_force_only():
    """Start guards that could not prove the master leave both nodes
    replicas of each other: nobody acknowledged a write since."""
    promotion_method = redis_decisions.promotion_method
    status = {"role": "replica", "master_link_status": "down",
              "master_link_down_seconds": 12, "replica_repl_offset": 100}
    assert promotion_method(status, "10.11.12.20:6379", None, True, "slave") == "forced"
    with pytest.raises(errors.Refused, match="link to it is down"):
        promotion_method(status, "10.11.12.20:6379", None, False, "slave")

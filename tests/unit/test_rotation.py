"""ha_core.rotation and the password decisions of ha_core.redis_decisions:
in what order the nodes take new secrets, and which Redis passwords to try
and retire."""

import hashlib

from ha_core import rotation
from ha_core.cluster import Cluster
from ha_core.redis_decisions import passwords_to_retire, passwords_to_try
from tests.unit.test_failover import S1, S2, healthy_cluster, pg_standby

W1, LB = "airflow-worker1", "airflow-lb1"


def cluster(fernet_key="k" * 43 + "=", primary=None):
    nodes = {S1: {"address": "10.11.12.10", "roles": ["postgresql", "redis", "airflow-scheduler"]},
             S2: {"address": "10.11.12.20", "roles": ["postgresql", "redis", "airflow-scheduler"]},
             W1: {"address": "10.11.12.30", "roles": ["airflow-worker"]},
             LB: {"address": "10.11.12.5", "roles": ["haproxy"]}}
    pillar = {"cluster": {"primary": S1, "nodes": nodes}, "airflow": {"fernet_key": fernet_key}}
    if primary:
        pillar["topology"] = {"primary": primary}
    return Cluster(pillar)


def test_the_primary_takes_the_new_passwords_before_the_standby():
    result = rotation.plan(cluster(), {S1, S2, W1, LB}, healthy_cluster()[0])
    assert result["refused"] is None
    assert result["order"] == [S1, S2] and result["down"] == []


def test_after_a_failover_the_recorded_primary_goes_first():
    result = rotation.plan(cluster(primary=S2), {S1, S2, W1, LB}, healthy_cluster(S2, S1)[0])
    assert result["order"] == [S2, S1]


def test_a_node_down_is_left_to_its_highstate_when_it_returns():
    pg_states = {S1: healthy_cluster()[0][S1]}
    result = rotation.plan(cluster(), {S1, LB}, pg_states)
    assert result["refused"] is None
    assert result["order"] == [S1] and result["down"] == [S2, W1]
    assert any("when their minion returns" in line for line in rotation.plan_lines(result))


def test_refused_when_the_recorded_primary_is_not_a_primary():
    pg_states = {S1: pg_standby(S1, S2), S2: pg_standby(S2, S1)}
    result = rotation.plan(cluster(), {S1, S2, W1, LB}, pg_states)
    assert "the recorded primary airflow-server1 is standby" in result["refused"]
    assert "orch.failover" in result["refused"] and result["order"] == []


def test_refused_when_the_recorded_primary_does_not_answer():
    result = rotation.plan(cluster(), {S2, W1, LB}, {S2: healthy_cluster()[0][S2]})
    assert "is not answering" in result["refused"]


def test_an_invalid_pillar_refuses_before_anything_else():
    result = rotation.plan(cluster(), {S1, S2}, {}, refusal="the pillar is invalid: x")
    assert result["refused"] == "the pillar is invalid: x"
    assert rotation.plan_lines(result)[-1] == "    REFUSED: the pillar is invalid: x"


def test_two_fernet_keys_are_re_encrypted_one_is_not():
    one = rotation.plan(cluster(), {S1, S2, W1, LB}, healthy_cluster()[0])
    two = rotation.plan(cluster(["n" * 43 + "=", "o" * 43 + "="]), {S1, S2, W1, LB},
                        healthy_cluster()[0])
    assert one["fernet_keys"] == 1 and two["fernet_keys"] == 2
    assert not any("re-encrypted" in line for line in rotation.plan_lines(one))
    assert any("re-encrypted with the first" in line for line in rotation.plan_lines(two))


def test_redis_tries_the_new_password_then_the_old_then_none():
    assert passwords_to_try("new", "old") == ["new", "old", None]
    assert passwords_to_try("new", "new") == ["new", None]
    assert passwords_to_try("new", None) == ["new", None]


def test_every_password_but_the_current_one_is_retired():
    def digest(password):
        return hashlib.sha256(password.encode()).hexdigest()

    assert passwords_to_retire([digest("old"), digest("new")], "new") == 1
    assert passwords_to_retire([digest("new")], "new") == 0
    assert passwords_to_retire([digest("a"), digest("b")], "new") == 2


def test_the_workers_are_drained_only_when_a_secret_a_task_cannot_outlive_changes():
    states = healthy_cluster()[0]
    unchanged = rotation.plan(cluster(), {S1, S2, W1, LB}, states)
    changed = rotation.plan(cluster(), {S1, S2, W1, LB}, states, drain_for=[
        "Airflow's database password", "the token signing key"])
    assert unchanged["drain"] is False and changed["drain"] is True
    assert "    Airflow's database password and the token signing key change: the Celery " \
        "workers finish their running tasks and stop first (queued tasks wait)" \
        in rotation.plan_lines(changed)


def test_the_token_key_fingerprint_is_of_the_jwt_secret_airflow_cfg_holds():
    key = "lab-webserver-secret"
    secret = hashlib.sha256(f"airflow jwt secret: {key}".encode()).hexdigest()
    assert rotation.token_key_fingerprint({"airflow": {"webserver_secret_key": key}}) == \
        hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in rotation.token_key_fingerprint({"airflow": {"webserver_secret_key": key}})

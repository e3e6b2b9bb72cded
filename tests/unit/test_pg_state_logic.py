"""Decisions of our PostgreSQL states that need no server."""

import base64
import hashlib
import hmac

import pytest

from tests.conftest import REPO, load_module

pg_role = load_module(REPO / "_states" / "pg_role.py")
pg_replication_state = load_module(REPO / "_states" / "pg_replication.py")


def scram_verifier(password, salt=b"0123456789abcdef", iterations=4096):
    """A verifier as PostgreSQL stores it (RFC 5802 keys)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def test_scram_verifier_of_the_same_password_matches():
    assert pg_role.scram_password_matches(scram_verifier("s3cret"), "s3cret")


@pytest.mark.parametrize("verifier", [
    scram_verifier("other"), None, "", "md5a1b2c3", "SCRAM-SHA-256$garbage",
])
def test_other_or_missing_verifiers_do_not_match(verifier):
    assert not pg_role.scram_password_matches(verifier, "s3cret")


standby_action = pg_replication_state.standby_action


def test_a_standby_of_the_primary_is_kept():
    status = {"role": "standby", "standby_of": {"host": "airflow-server1", "port": 5432}}
    assert standby_action(status, "airflow-server1", False)[0] == "keep"


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

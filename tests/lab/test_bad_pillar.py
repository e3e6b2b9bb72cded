"""Bad pillar given to the lab's real highstate (as a pillar override on the
command line): every node refuses to apply anything, with a message that
names the key and the fix, and nothing changes on any node: the files Salt
manages and the services that run are as they were."""

import json

import pytest

from tests.conftest import highstate, salt_json

pytestmark = pytest.mark.lab

MANAGED_FILES = ("/etc/hosts /opt/airflow/airflow.cfg /etc/default/airflow "
                 "/etc/postgresql/15/main/*.conf /etc/redis/*.conf /etc/haproxy/haproxy.cfg "
                 "/etc/systemd/system/*.service /etc/systemd/system/*.service.d/*.conf")

# (pillar override, what the message must say)
CASES = {
    "unknown role": (
        {"cluster": {"nodes": {"airflow-worker1": {"roles": ["airflow-worker", "databse"]}}}},
        "cluster:nodes:airflow-worker1:roles has the unknown role 'databse'"),
    "missing address": (
        {"cluster": {"nodes": {"airflow-server2": {"address": ""}}}},
        "cluster:nodes:airflow-server2:address is missing"),
    "address that is not an IP": (
        {"cluster": {"nodes": {"airflow-server2": {"address": "server2.example"}}}},
        "cluster:nodes:airflow-server2:address 'server2.example' is not an IPv4 or IPv6 address"),
    "duplicate address": (
        {"cluster": {"nodes": {"airflow-worker1": {"address": "10.11.12.20"}}}},
        "cluster:nodes:airflow-worker1:address 10.11.12.20 is also the address of airflow-server2"),
    "two initial primaries": (
        {"cluster": {"primary": ["airflow-server1", "airflow-server2"]}},
        "cluster:primary must name exactly one node"),
    "no initial primary": (
        {"cluster": {"primary": ""}},
        "cluster:primary must name exactly one node"),
    "a standby without a primary": (
        {"cluster": {"nodes": {"airflow-server1": {"roles": ["redis", "airflow-webserver"]}}}},
        "cluster:primary airflow-server1 has no postgresql role"),
    "empty database password": (
        {"postgresql": {"airflow_password": ""}},
        "postgresql:airflow_password is missing or empty"),
    "example secret left in": (
        {"redis": {"password": "CHANGE-ME"}},
        "redis:password is still the example's CHANGE-ME"),
    "empty webserver secret key": (
        {"airflow": {"webserver_secret_key": ""}},
        "airflow:webserver_secret_key is missing or empty"),
    "invalid Fernet key": (
        {"airflow": {"fernet_key": "not-a-fernet-key"}},
        "airflow:fernet_key is not a Fernet key"),
    "TLS key that is not PEM": (
        {"haproxy": {"tls": {"key": "not-a-key"}}},
        "haproxy:tls:key is not a PEM private key"),
    "Airflow version without constraints": (
        {"airflow": {"version": "2.9.9"}},
        "airflow:version 2.9.9 has no constraints file"),
    "unsupported PostgreSQL version": (
        {"postgresql": {"version": 13}},
        "postgresql:version 13 is not supported on Debian"),
    "topology record naming a worker": (
        {"topology": {"primary": "airflow-worker1"}},
        "topology:primary names airflow-worker1, which is not a node with the postgresql and redis roles"),
}


def snapshot(lab):
    """Per node: checksums of the files Salt manages, and which of our
    services run."""
    script = (f"md5sum {MANAGED_FILES} 2>/dev/null; "
              "systemctl list-units --type=service --state=running --no-legend --plain "
              "| cut -d' ' -f1 | grep -E '^(airflow-|postgresql|redis|haproxy)' | sort")
    replies = salt_json("*", "cmd.run", script, "python_shell=True")
    assert set(replies) == set(lab), replies
    return replies


@pytest.fixture(scope="module")
def converged(lab):
    return snapshot(lab)


@pytest.mark.parametrize("case", CASES)
def test_bad_pillar_changes_nothing_on_any_node(lab, converged, case):
    override, message = CASES[case]
    results = highstate("*", f"pillar={json.dumps(override)}")
    assert set(results) == set(lab)
    for node, result in results.items():
        assert isinstance(result, list), f"{node} applied states: {sorted(result)[:5]}"
        text = " ".join(result)
        assert message in text and "nothing was changed on any node" in text, f"{node}: {text}"
    assert snapshot(lab) == converged

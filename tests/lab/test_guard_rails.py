"""Secrets stay secret and every endpoint authenticates, tried on the lab
from the host, which is not a cluster node."""

import json
import subprocess
import threading
import time

import pytest
import requests
import yaml

from lab.settings import LAB_SECRETS, SALT_ROOT, lab_balancer_address
from tests.conftest import REPO, bin_lab

pytestmark = pytest.mark.lab

PRIMARY = "airflow-server1"


def secret_values():
    """Every password and key in the lab's secrets pillar."""
    def leaves(data):
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in ("roles", "username", "stats_user"):
                    yield from leaves(value)
        elif isinstance(data, str):
            yield data

    return sorted(set(leaves(yaml.safe_load(LAB_SECRETS.read_text()))))


def leaked(text, secrets):
    return [secret for secret in secrets if secret in text]


def test_secrets_stay_out_of_output_logs_ps_and_readable_files(lab):
    secrets = secret_values()
    assert len(secrets) >= 8
    # Damage two secret-bearing files so that the highstate rewrites them.
    bin_lab("exec", "airflow-server2", "--", "sh", "-c", "echo stale > /var/lib/postgresql/.pgpass")
    bin_lab("exec", "airflow-lb1", "--", "sh", "-c", "echo '# stale' >> /etc/haproxy/haproxy.cfg")

    snapshots, done = [], threading.Event()

    def watch_ps():
        while not done.is_set():
            for node in lab:
                snapshots.append(bin_lab("exec", node, "--", "ps", "-eo", "args", check=False).stdout)

    watcher = threading.Thread(target=watch_ps)
    watcher.start()
    try:
        run = subprocess.run([str(REPO / ".venv/bin/salt"), "*", "state.apply", "-l", "debug",
                              "--out=json", "--static"],
                             cwd=REPO, capture_output=True, text=True)
    finally:
        done.set()
        watcher.join()
    results = json.loads(run.stdout)
    changed = {state["name"] for node in results.values() for state in node.values()
               if state["changes"]}
    assert all(state["result"] for node in results.values() for state in node.values())
    assert {"/var/lib/postgresql/.pgpass", "/etc/haproxy/haproxy.cfg"} <= changed
    assert leaked(run.stdout + run.stderr, secrets) == [], "in the highstate's output (debug)"
    assert len(snapshots) > len(lab)
    assert leaked("\n".join(snapshots), secrets) == [], "on a command line (ps)"

    master_log = (SALT_ROOT / "var/log/salt/master").read_text(errors="replace")
    assert leaked(master_log, secrets) == [], "in the master's log"
    patterns = "\n".join(secrets) + "\n"
    for node in lab:
        minion_log = bin_lab("exec", node, "--", "cat", "/var/log/salt/minion", check=False).stdout
        assert leaked(minion_log, secrets) == [], f"in {node}'s minion log"
        # World-readable files holding a secret, anywhere but /proc and /sys.
        found = bin_lab("exec", node, "--", "sh", "-c",
                        "grep -rlsF -f - / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
                        "| while read f; do [ $(( 0$(stat -c %a \"$f\") & 4 )) -ne 0 ] && echo \"$f\"; done",
                        check=False, input=patterns).stdout.split()
        assert found == [], f"world-readable files with a secret on {node}: {found}"


def test_secret_bearing_files_belong_to_their_service_account(lab):
    expected = {
        "airflow-server1": {"/opt/airflow/airflow.cfg": "600 airflow",
                            "/var/lib/postgresql/.pgpass": "600 postgres",
                            "/etc/redis/redis.conf": "640 redis"},
        "airflow-worker1": {"/opt/airflow/airflow.cfg": "600 airflow"},
        "airflow-lb1": {"/etc/haproxy/haproxy.cfg": "640 root"},
    }
    for node, files in expected.items():
        for path, mode in files.items():
            assert bin_lab("exec", node, "--", "stat", "-c", "%a %U", path).stdout.strip() == mode, path


def test_redis_refuses_clients_without_the_password(lab):
    address = lab[PRIMARY]
    reply = subprocess.run(["redis-cli", "-h", address, "ping"], capture_output=True, text=True)
    assert "NOAUTH" in reply.stdout + reply.stderr
    password = yaml.safe_load(LAB_SECRETS.read_text())["redis"]["password"]
    reply = subprocess.run(["redis-cli", "--no-auth-warning", "-h", address, "ping"],
                           capture_output=True, text=True, env={"REDISCLI_AUTH": password, "PATH": "/usr/bin:/bin"})
    assert reply.stdout.strip() == "PONG"


def test_postgresql_rejects_an_address_outside_the_cluster(lab):
    password = yaml.safe_load(LAB_SECRETS.read_text())["postgresql"]["airflow_password"]
    reply = subprocess.run(
        ["psql", "-XAtc", "select 1", f"host={lab[PRIMARY]} user=airflow dbname=airflow connect_timeout=5"],
        capture_output=True, text=True, env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"})
    assert reply.returncode != 0
    assert "no pg_hba.conf entry for host \"10.11.12.1\"" in reply.stderr


def test_the_airflow_role_cannot_replicate(lab):
    """From an Airflow node (one with psql), with the right password: no
    replication connection."""
    password = yaml.safe_load(LAB_SECRETS.read_text())["postgresql"]["airflow_password"]
    reply = bin_lab("exec", "airflow-server2", "--", "sh", "-c",
                    f"PGPASSWORD=$(cat) psql -XAtc 'IDENTIFY_SYSTEM' "
                    f"'host={lab[PRIMARY]} user=airflow dbname=airflow replication=true'",
                    check=False, input=password)
    assert reply.returncode != 0
    assert "no pg_hba.conf entry for replication connection" in reply.stderr
    # The same role does reach its own database, with scram-sha-256.
    reply = bin_lab("exec", "airflow-server2", "--", "sh", "-c",
                    f"PGPASSWORD=$(cat) psql -XAtc 'show password_encryption' "
                    f"'host={lab[PRIMARY]} user=airflow dbname=airflow'",
                    check=False, input=password)
    assert reply.stdout.strip() == "scram-sha-256", reply.stderr


def test_a_viewer_reads_dags_but_cannot_trigger_them(lab):
    api = f"http://{lab_balancer_address()}/api/v1"
    viewer = ("viewer", yaml.safe_load(LAB_SECRETS.read_text())["airflow"]["users"]["viewer"]["password"])
    deadline = time.monotonic() + 300
    while requests.get(f"{api}/dags/ha_smoke", auth=viewer, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "ha_smoke not visible to the viewer"
        time.sleep(3)
    refused = requests.post(f"{api}/dags/ha_smoke/dagRuns", json={}, auth=viewer, timeout=10)
    assert refused.status_code == 403

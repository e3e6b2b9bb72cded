"""Secret rotation on the lab, as an operator does it: edit
pillar/lab/secrets.sls, then `salt-run state.orchestrate orch.rotate`.

Every secret goes to a new value holding letters, digits and
`@ / # % & : ? ' " \\ $` and a space, the Fernet key to [new, old] and the
TLS certificate to a new one, while a writer commits rows and pushes Redis
items over connections it opened before, a DAG run spans the rotation, and
a client polls the UI through the load balancer five times a second. Then
every secret goes back (the Fernet key to [lab's, new]), and a last edit
drops the second Fernet key: the lab's secrets are exactly as before. The
downtime of each run is printed, not asserted.

Destructive (Airflow restarts): it runs after the other lab tests, so its
search of the logs (the master's and the minions', which keep everything
of the run) covers the failovers before it too.
pillar/lab/secrets.sls is restored when the module ends, whatever happens.
"""

import copy
import itertools
import re
import ssl
import subprocess
import threading
import time
import uuid

import pytest
import requests
import yaml
from cryptography.fernet import Fernet

from lab.settings import LAB_SECRETS, lab_balancer_address
from tests.conftest import LAB_CA, bin_lab
from tests.lab import writers
from tests.lab.airflow_api import Api, health, healthy, wait_until
from tests.lab.test_guard_rails import (
    ProcessWatch,
    leaked,
    secret_values,
    secrets_in_logs_and_files,
)
from tests.lab.writers import (
    SECRETS,
    SERVER1,
    SERVER2,
    Writer,
    assert_nothing_lost,
    orchestrate,
    psql,
    redis_cli,
    salt_run_json,
)

pytestmark = [pytest.mark.lab, pytest.mark.destructive]

BALANCER = lab_balancer_address()
UI = f"https://{BALANCER}"
FLOWER = f"http://{BALANCER}:5555/api/workers"
STATS = f"http://{BALANCER}:8404/stats"
ORIGINAL = LAB_SECRETS.read_text()
ORIGINAL_CA = LAB_CA.read_text()
# The characters the issue names, and a space.
ODD = "@/#%&:?'\"\\$ "
PROBE_CONNECTION = "rotation_probe"
PROBE_PASSWORD = "probe-connection-secret"


def odd(name):
    return f"{name}-{uuid.uuid4().hex[:8]} {ODD}9z"


def new_certificate(directory):
    """A self-signed certificate and key for the load balancer, as the lab's."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                    "-subj", "/CN=airflow-lb1", "-addext",
                    f"subjectAltName=DNS:airflow-lb1,IP:{BALANCER},IP:127.0.0.1",
                    "-keyout", str(directory / "new.key"), "-out", str(directory / "new.crt")],
                   check=True, capture_output=True)
    return (directory / "new.crt").read_text(), (directory / "new.key").read_text()


def rotated(directory):
    """The lab's secrets with every one replaced, the Fernet key as [new, old]."""
    secrets = yaml.safe_load(ORIGINAL)
    secrets["postgresql"] = {key: odd(key) for key in secrets["postgresql"]}
    secrets["redis"]["password"] = odd("redis")
    airflow = secrets["airflow"]
    airflow["fernet_key"] = [Fernet.generate_key().decode(), airflow["fernet_key"]]
    airflow["webserver_secret_key"] = odd("webserver")
    for login in [airflow["admin"], airflow["flower"], *airflow["users"].values()]:
        login["password"] = odd("login")
    secrets["haproxy"]["stats_password"] = odd("stats")
    certificate, key = new_certificate(directory)
    secrets["haproxy"]["tls"] = {"certificate": certificate, "key": key}
    return secrets


def rotated_back(secrets):
    """The lab's secrets again, the Fernet key as [lab's, rotated]: rotating
    back is a rotation too."""
    back = yaml.safe_load(ORIGINAL)
    back["airflow"]["fernet_key"] = [back["airflow"]["fernet_key"],
                                     secrets["airflow"]["fernet_key"][0]]
    return back


def write_secrets(secrets):
    """Edit pillar/lab/secrets.sls as the operator does."""
    LAB_SECRETS.write_text(yaml.safe_dump(secrets, sort_keys=False))
    writers.reload_secrets()


def login(name, secrets):
    """(username, password) of a login of the pillar's secrets."""
    airflow = secrets["airflow"]
    return {"admin": ("admin", airflow["admin"]["password"]),
            "viewer": ("viewer", airflow["users"]["viewer"]["password"]),
            "operator": ("operator", airflow["users"]["operator"]["password"]),
            "flower": ("flower", airflow["flower"]["password"]),
            "stats": ("admin", secrets["haproxy"]["stats_password"])}[name]


class UiPoller(threading.Thread):
    """Asks Airflow's health through the load balancer five times a second; keeps
    (time, whether it answered healthy)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.done = [], threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                ok = healthy(health(timeout=2))
            except (requests.RequestException, ValueError):
                ok = False
            self.samples.append((time.time(), ok))
            time.sleep(0.2)

    def stop(self):
        self.done.set()
        self.join()
        failed = [at for at, ok in self.samples if not ok]
        return {"polls": len(self.samples), "failed": len(failed),
                "seconds without a healthy answer": round(longest_gap(self.samples), 1)}


def longest_gap(samples):
    """The longest time between two good samples (time, ok)."""
    good = [at for at, ok in samples if ok]
    return max((b - a for a, b in itertools.pairwise(good)), default=0.0)


def write_gaps(acknowledged):
    """The longest pause between two acknowledged writes, per kind."""
    return {kind: round(max((b[2] - a[2] for a, b in itertools.pairwise(writes)), default=0.0), 1)
            for kind, writes in acknowledged.items()}


def primary_now():
    return salt_run_json("airflow_ha.status")["primary"]


def streams(primary):
    """The standby's walsender on the primary: its pid (the same pid, the
    same connection)."""
    return psql(primary, "select pid from pg_stat_replication").stdout.split()


def replica_link(master):
    """The id of the Redis replica's connection on the master."""
    return re.findall(r"\bid=(\d+)", redis_cli(master, "CLIENT", "LIST", "TYPE", "replica"))


def haproxy_pid():
    return bin_lab("exec", "airflow-lb1", "--", "systemctl", "show", "-p", "MainPID",
                   "--value", "haproxy").stdout.strip()


def airflow_cli(*args, check=True):
    return bin_lab("exec", SERVER1, "--", "runuser", "-u", "airflow", "--", "env",
                   "AIRFLOW_HOME=/opt/airflow", "/opt/airflow/venv/bin/airflow", *args,
                   check=check).stdout


def stored_probe_password(primary):
    """The probe connection's password as the database stores it (encrypted)."""
    return psql(primary, f"select password from connection where conn_id = '{PROBE_CONNECTION}'"
                ).stdout.strip()


def trigger_run(admin, seconds):
    return Api(admin).trigger("ha_smoke", {"sleep_seconds": seconds})


def run_state(admin, run_id):
    return Api(admin).run_state("ha_smoke", run_id)


def assert_the_run_succeeded(admin, run_id):
    """The DAG run that spans a rotation ends in success; if not, the
    message holds its task's record and the end of its log on the worker."""
    state = wait_until(lambda: run_state(admin, run_id), 300, "the DAG run")
    if state == "success":
        return
    task = Api(admin).get(f"/dags/ha_smoke/dagRuns/{run_id}/taskInstances/worker_hostname").json()
    log = bin_lab("exec", "airflow-worker1", "--", "sh", "-c",
                  f"tail -n 30 /opt/airflow/logs/dag_id=ha_smoke/run_id={run_id}/*/attempt=*.log",
                  check=False)
    raise AssertionError(f"the DAG run {run_id} ended {state}: task {task}; its log ends: "
                         f"{log.stdout}{log.stderr}")


def psql_login(node, host, user, database, password):
    """Whether user logs in to database at host from node with password."""
    result = bin_lab("exec", node, "--", "env", f"PGPASSWORD={password}", "psql", "-XAtq",
                     "-c", "select 1", f"host={host} user={user} dbname={database} "
                     "connect_timeout=5", check=False)
    return result.returncode == 0


def redis_auth(node, address, password):
    reply = bin_lab("exec", node, "--", "env", f"REDISCLI_AUTH={password}", "redis-cli",
                    "--no-auth-warning", "-h", address, "PING", check=False).stdout
    return reply.strip() == "PONG"


def served_certificate():
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(
        ssl.get_server_certificate((BALANCER, 443))))


def same_certificate(a, b):
    return ssl.PEM_cert_to_DER_cert(a.strip()) == ssl.PEM_cert_to_DER_cert(b.strip())


def api_server_login(node_address, login):
    """A login on one API server (its own port, past HAProxy): a REST API
    client whose token that server signed (Airflow 3; a session cookie on
    Airflow 2 would be the same test)."""
    return Api(login, base=f"http://{node_address}:8080")


def logged_in_on(client, node_address):
    """Whether the client's token (signed with the JWT secret) is accepted
    by that API server."""
    reply = requests.get(f"http://{node_address}:8080/api/v2/dags", timeout=10,
                         **client.auth_kwargs())
    return reply.status_code == 200


class Rotation:
    """One run of orch.rotate after an edit of the secrets, with what was
    measured around it."""

    def __init__(self, lab, say, before, after):
        self.lab, self.say, self.before, self.after = lab, say, before, after

    def run(self):
        primary = primary_now()
        standby = SERVER2 if primary == SERVER1 else SERVER1
        self.walsender, self.replica = streams(primary), replica_link(primary)
        self.haproxy = haproxy_pid()
        run_id = trigger_run(login("admin", self.before), 20)
        writer = Writer(self.lab)
        writer.wait_flowing(primary)
        poller, processes = UiPoller(), ProcessWatch(self.lab)
        poller.start()
        processes.start()
        write_secrets(self.after)
        try:
            self.returncode, self.output = orchestrate(self.say, "orch.rotate")
        finally:
            self.command_lines = processes.stop()
            self.ui = poller.stop()
            self.acknowledged = writer.stop()
        self.primary, self.standby, self.run_id, self.writer = primary, standby, run_id, writer
        self.say(f"rotation: UI {self.ui}; longest pause between acknowledged writes "
                 f"{write_gaps(self.acknowledged)} s")
        return self


@pytest.fixture(scope="module")
def secrets_restored():
    """pillar/lab/secrets.sls and the tests' trust of the UI's certificate,
    as they were, when the module ends."""
    yield
    LAB_SECRETS.write_text(ORIGINAL)
    LAB_CA.write_text(ORIGINAL_CA)
    writers.reload_secrets()


@pytest.fixture(scope="module")
def rotation(lab, say_module, secrets_restored, tmp_path_factory):
    """Every secret rotated by orch.rotate, under load."""
    wait_until(lambda: healthy(health()), 300, "Airflow healthy through HAProxy")
    before = copy.deepcopy(SECRETS)
    after = rotated(tmp_path_factory.mktemp("tls"))
    # The tests trust both certificates while the load balancer changes over.
    LAB_CA.write_text(ORIGINAL_CA + after["haproxy"]["tls"]["certificate"])
    psql(primary_now(), f"delete from connection where conn_id = '{PROBE_CONNECTION}'")
    airflow_cli("connections", "add", PROBE_CONNECTION,
                "--conn-uri", f"postgresql://probe:{PROBE_PASSWORD}@db.example/probe")
    old_values = secret_values()
    done = Rotation(lab, say_module, before, after).run()
    done.old_values, done.new_values = old_values, secret_values()
    return done


def test_one_rotation_converges_with_nothing_stopped_or_lost(rotation):
    assert rotation.returncode == 0, rotation.output
    for step in ("take the new passwords", "every node takes the new secrets",
                 "re-encrypt connections and variables", "retire the old Redis passwords",
                 "verify"):
        assert step in rotation.output
    # The standby never stopped streaming, the Redis replica never lost its link.
    assert streams(rotation.primary) == rotation.walsender
    assert replica_link(rotation.primary) == rotation.replica
    # Connections opened before the rotation kept writing throughout, and
    # every acknowledged write is there.
    assert max(write_gaps(rotation.acknowledged).values()) < 5
    assert_nothing_lost(rotation.writer, rotation.acknowledged, rotation.primary)
    admin = login("admin", rotation.after)
    assert_the_run_succeeded(admin, rotation.run_id)
    assert healthy(health())


def test_the_old_secrets_are_refused_and_the_new_ones_work(rotation, lab):
    old, new = rotation.before, rotation.after
    primary = lab[rotation.primary]
    for secrets, works in ((new, True), (old, False)):
        assert psql_login(SERVER1, primary, "airflow", "airflow",
                          secrets["postgresql"]["airflow_password"]) is works
        assert psql_login(rotation.standby, primary, "replicator", "postgres",
                          secrets["postgresql"]["replication_password"]) is works
        for server in (SERVER1, SERVER2):
            assert redis_auth(server, lab[server], secrets["redis"]["password"]) is works
        for name in ("admin", "viewer", "operator"):
            reply = Api(login(name, secrets)).get("/dags")
            assert reply.status_code == (200 if works else 401), name
        assert requests.get(FLOWER, auth=login("flower", secrets), timeout=10).status_code == \
            (200 if works else 401)
        assert requests.get(STATS, auth=login("stats", secrets), timeout=10).status_code == \
            (200 if works else 401)


def test_the_load_balancer_reloaded_to_the_new_certificate(rotation):
    assert same_certificate(served_certificate(), rotation.after["haproxy"]["tls"]["certificate"])
    assert haproxy_pid() == rotation.haproxy, "HAProxy was restarted, not reloaded"


def test_a_login_on_one_api_server_is_valid_on_the_other(rotation, lab):
    client = api_server_login(lab[SERVER1], login("admin", rotation.after))
    assert logged_in_on(client, lab[SERVER1])
    assert logged_in_on(client, lab[SERVER2])


def test_connections_are_re_encrypted_with_the_new_fernet_key(rotation):
    new_key = rotation.after["airflow"]["fernet_key"][0]
    stored = stored_probe_password(rotation.primary).encode()
    assert Fernet(new_key).decrypt(stored).decode() == PROBE_PASSWORD
    assert PROBE_PASSWORD in airflow_cli("connections", "get", PROBE_CONNECTION, "-o", "json")


def test_no_secret_old_or_new_in_output_logs_ps_or_readable_files(rotation, lab):
    secrets = sorted(set(rotation.old_values) | set(rotation.new_values))
    assert leaked(rotation.output, secrets) == [], "in orch.rotate's output"
    assert leaked(rotation.command_lines, secrets) == [], "on a command line (ps)"
    assert secrets_in_logs_and_files(lab, secrets) == []


def test_every_secret_rotates_back_then_the_old_fernet_key_is_dropped(rotation, lab, say):
    back = Rotation(lab, say, rotation.after, rotated_back(rotation.after)).run()
    assert back.returncode == 0, back.output
    assert "re-encrypt connections and variables" in back.output
    assert streams(back.primary) == back.walsender
    assert replica_link(back.primary) == back.replica
    assert_nothing_lost(back.writer, back.acknowledged, back.primary)
    admin = login("admin", back.after)
    assert_the_run_succeeded(admin, back.run_id)
    assert Api(login("admin", rotation.after)).get("/dags").status_code == 401
    assert not redis_auth(SERVER1, lab[SERVER1], rotation.after["redis"]["password"])
    assert redis_auth(SERVER1, lab[SERVER1], back.after["redis"]["password"])
    assert same_certificate(served_certificate(), back.after["haproxy"]["tls"]["certificate"])

    # The later pillar edit: the lab's secrets exactly, one Fernet key.
    dropped = Rotation(lab, say, back.after, yaml.safe_load(ORIGINAL)).run()
    assert dropped.returncode == 0, dropped.output
    assert "re-encrypt" not in dropped.output and "Celery workers" not in dropped.output
    stored = stored_probe_password(dropped.primary).encode()
    assert Fernet(dropped.after["airflow"]["fernet_key"]).decrypt(stored).decode() == PROBE_PASSWORD
    assert PROBE_PASSWORD in airflow_cli("connections", "get", PROBE_CONNECTION, "-o", "json")
    assert_nothing_lost(dropped.writer, dropped.acknowledged, dropped.primary)

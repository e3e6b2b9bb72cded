"""Secrets stay secret and every endpoint authenticates, tried on the lab
from the host, which is not a cluster node, and from a cluster node."""

import json
import socket
import subprocess
import threading

import pytest
import requests
import yaml

from lab.settings import LAB_SECRETS, SALT_ROOT, lab_balancer_address
from tests.conftest import LAB_CA, REPO, bin_lab
from tests.lab.airflow_api import API_PATHS, LOGIN_PATHS, Api, health, wait_until
from tests.lab.writers import redis_cli, redis_master

pytestmark = pytest.mark.lab

PRIMARY = "airflow-server1"
CLUSTER_NODE = "airflow-worker1"
BALANCER = lab_balancer_address()
SECRETS = yaml.safe_load(LAB_SECRETS.read_text())


def secret_values():
    """Every password and key in the lab's secrets pillar (of a PEM key, its
    longest line; the TLS certificate is public)."""
    def leaves(data):
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in ("roles", "username", "stats_user", "certificate", "ca_certificate"):
                    yield from leaves(value)
        elif isinstance(data, list):  # a Fernet key list, while rotating
            for value in data:
                yield from leaves(value)
        elif isinstance(data, str):
            yield max(data.splitlines(), key=len)

    return sorted(set(leaves(yaml.safe_load(LAB_SECRETS.read_text()))))


def leaked(text, secrets):
    return [secret for secret in secrets if secret in text]


class ProcessWatch(threading.Thread):
    """Snapshots the command lines of every process on every node (ps)
    until stopped."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes, self.snapshots, self.done = nodes, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            for node in self.nodes:
                self.snapshots.append(
                    bin_lab("exec", node, "--", "ps", "-eo", "args", check=False).stdout)

    def stop(self):
        self.done.set()
        self.join()
        return "\n".join(self.snapshots)


def secrets_in_logs_and_files(lab, secrets):
    """Where the secrets are found: the master's log, the minions' logs, and
    world-readable files on every node (anywhere but /proc, /sys, /dev)."""
    found = []
    master_log = (SALT_ROOT / "var/log/salt/master").read_text(errors="replace")
    found += [f"the master's log: {secret}" for secret in leaked(master_log, secrets)]
    patterns = "\n".join(secrets) + "\n"
    for node in lab:
        minion_log = bin_lab("exec", node, "--", "cat", "/var/log/salt/minion", check=False).stdout
        found += [f"{node}'s minion log: {secret}" for secret in leaked(minion_log, secrets)]
        readable = bin_lab("exec", node, "--", "sh", "-c",
                           "grep -rlsF -f - / --exclude-dir=proc --exclude-dir=sys "
                           "--exclude-dir=dev | while read f; do "
                           "[ $(( 0$(stat -c %a \"$f\") & 4 )) -ne 0 ] && echo \"$f\"; done",
                           check=False, input=patterns).stdout.split()
        found += [f"world-readable on {node}: {path}" for path in readable]
    return found


def test_secrets_stay_out_of_output_logs_ps_and_readable_files(lab):
    secrets = secret_values()
    assert len(secrets) >= 8
    # Damage two secret-bearing files so that the highstate rewrites them.
    bin_lab("exec", "airflow-server2", "--", "sh", "-c", "echo stale > /var/lib/postgresql/.pgpass")
    bin_lab("exec", "airflow-lb1", "--", "sh", "-c", "echo '# stale' >> /etc/haproxy/haproxy.cfg")

    processes = ProcessWatch(lab)
    processes.start()
    try:
        # Waiting for every node, as tests.conftest.highstate does.
        run = subprocess.run([str(REPO / ".venv/bin/salt"), "--timeout=600", "*", "state.apply",
                              "-l", "debug",
                              "--out=json", "--static"],
                             cwd=REPO, capture_output=True, text=True)
    finally:
        command_lines = processes.stop()
    results = json.loads(run.stdout)
    changed = {state["name"] for node in results.values() for state in node.values()
               if state["changes"]}
    assert all(state["result"] for node in results.values() for state in node.values())
    assert {"/var/lib/postgresql/.pgpass", "/etc/haproxy/haproxy.cfg"} <= changed
    assert leaked(run.stdout + run.stderr, secrets) == [], "in the highstate's output (debug)"
    assert len(processes.snapshots) > len(lab)
    assert leaked(command_lines, secrets) == [], "on a command line (ps)"
    assert secrets_in_logs_and_files(lab, secrets) == []


def test_secret_bearing_files_belong_to_their_service_account(lab):
    expected = {
        "airflow-server1": {"/opt/airflow/airflow.cfg": "600 airflow",
                            "/var/lib/postgresql/.pgpass": "600 postgres",
                            "/etc/redis/airflow-ha-auth.conf": "640 redis",
                            "/etc/default/airflow-flower": "600 root"},
        "airflow-worker1": {"/opt/airflow/airflow.cfg": "600 airflow"},
        "airflow-lb1": {"/etc/haproxy/haproxy.cfg": "640 root",
                        "/etc/haproxy/tls/airflow.pem.key": "640 root"},
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


# -- the access matrix, from the host and from a cluster node -------------------

def login(user):
    users = {"admin": SECRETS["airflow"]["admin"]["password"],
             "viewer": SECRETS["airflow"]["users"]["viewer"]["password"],
             "operator": SECRETS["airflow"]["users"]["operator"]["password"]}
    return [user, users[user]]


def access_matrix(line):
    """(what, method, url, login or None, expected HTTP status) on Airflow
    ``line`` (3: REST API v2 with a token from /auth/token; 2: v1 with basic
    auth)."""
    api, login_path = f"https://{BALANCER}{API_PATHS[line]}", LOGIN_PATHS[line]
    rows = [
        ("REST API, anonymous", "GET", f"{api}/dags", None, 401),
        ("REST API, wrong password", "GET", f"{api}/dags", ["admin", "wrong"], 401),
        ("REST API, Viewer reads", "GET", f"{api}/dags/ha_smoke", login("viewer"), 200),
        ("REST API, Viewer triggers", "POST", f"{api}/dags/ha_smoke/dagRuns", login("viewer"), 403),
        ("REST API, Op triggers", "POST", f"{api}/dags/ha_smoke/dagRuns", login("operator"), 200),
        ("REST API, Admin triggers", "POST", f"{api}/dags/ha_smoke/dagRuns", login("admin"), 200),
        ("UI, plain HTTP", "GET", f"http://{BALANCER}{login_path}", None, 301),
        ("UI over TLS", "GET", f"https://{BALANCER}{login_path}", None, 200),
        ("Flower, anonymous", "GET", f"http://{BALANCER}:5555/api/workers", None, 401),
        ("HAProxy stats, anonymous", "GET", f"http://{BALANCER}:8404/stats", None, 401),
    ]
    if line == 3:
        rows.append(("API token, wrong password", "POST", f"https://{BALANCER}/auth/token",
                     ["admin", "wrong"], 401))
    return rows


# Run on a node by its own Python, the probes and the lab's certificate
# embedded (on standard input, not on a command line). On Airflow 3 a login
# is a token from /auth/token (none for a wrong password: the call goes
# anonymous); the token request itself is sent as a JSON body.
NODE_PROBE = """
import base64, json, ssl, urllib.error, urllib.request

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None

opener = urllib.request.build_opener(
    urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=CA)), NoRedirect)

def call(method, url, body=None, headers=()):
    request = urllib.request.Request(url, method=method,
                                     data=json.dumps(body).encode() if method == "POST" else None,
                                     headers={"Content-Type": "application/json", **dict(headers)})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""

def auth_headers(auth):
    if not auth:
        return {}
    if LINE == 2:
        return {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
    status, body = call("POST", TOKEN_URL, {"username": auth[0], "password": auth[1]})
    return {"Authorization": "Bearer " + json.loads(body)["access_token"]} if status == 201 else {}

statuses = []
for method, url, auth in PROBES:
    if url == TOKEN_URL:
        statuses.append(call(method, url, {"username": auth[0], "password": auth[1]})[0])
    else:
        statuses.append(call(method, url, BODY, auth_headers(auth))[0])
print(json.dumps(statuses))
"""


def trigger_body(line):
    return {"logical_date": None} if line == 3 else {}


def statuses_from_the_host(line):
    statuses = []
    for _, method, url, auth, _ in access_matrix(line):
        api = Api(auth)
        if url.endswith("/auth/token"):
            statuses.append(api.token_reply().status_code)
            continue
        kwargs = api.auth_kwargs() if url.startswith(api.root) else {}
        response = requests.request(method, url, json=trigger_body(line) if method == "POST" else None,
                                    allow_redirects=False, timeout=30, **kwargs)
        statuses.append(response.status_code)
    return statuses


def statuses_from(node, line):
    probes = [[method, url, auth] for _, method, url, auth, _ in access_matrix(line)]
    script = (f"CA = {LAB_CA.read_text()!r}\nPROBES = {probes!r}\nLINE = {line}\n"
              f"TOKEN_URL = 'https://{BALANCER}/auth/token'\n"
              f"BODY = {trigger_body(line)!r}\n{NODE_PROBE}")
    return json.loads(bin_lab("exec", node, "--", "python3", "-", input=script).stdout)


@pytest.fixture(scope="module")
def ha_smoke_visible(lab):
    viewer = Api(login("viewer"))
    wait_until(lambda: viewer.get("/dags/ha_smoke").status_code == 200, 300,
               "ha_smoke visible to the viewer")
    return viewer.line


@pytest.mark.parametrize("where", ["host", CLUSTER_NODE])
def test_every_endpoint_answers_as_the_access_matrix_says(ha_smoke_visible, where):
    line = ha_smoke_visible
    statuses = statuses_from_the_host(line) if where == "host" else statuses_from(where, line)
    matrix = access_matrix(line)
    got = {what: status for (what, *_), status in zip(matrix, statuses)}
    expected = {what: status for what, *_, status in matrix}
    assert got == expected


def test_the_execution_api_answers_the_airflow_nodes_only(ha_smoke_visible, lab):
    url = f"http://{BALANCER}:8080/execution/health"
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=10)
    reply = bin_lab("exec", CLUSTER_NODE, "--", "python3", "-c",
                    f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).status)")
    assert reply.stdout.strip() == "200"


def test_the_ui_certificate_is_the_pillars_not_one_the_system_trusts(lab):
    assert health()["metadatabase"]["status"] == "healthy"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{BALANCER}/", timeout=10, verify=requests.certs.where())


def listening(node, port):
    sockets = bin_lab("exec", node, "--", "ss", "-ltnH", f"sport = :{port}").stdout
    return sorted({line.split()[3] for line in sockets.splitlines()})


def test_redis_listens_only_on_loopback_and_the_cluster_address(lab):
    for node in ("airflow-server1", "airflow-server2"):
        assert listening(node, 6379) == sorted([f"127.0.0.1:6379", f"{lab[node]}:6379"])


def test_redis_refuses_a_cluster_node_without_the_password(lab):
    script = ("import socket\n"
              f"s = socket.create_connection(({lab[PRIMARY]!r}, 6379), timeout=10)\n"
              "s.sendall(b'PING\\r\\n')\nprint(s.recv(100).decode())\n")
    assert bin_lab("exec", CLUSTER_NODE, "--", "python3", "-", input=script).stdout.startswith(
        "-NOAUTH")


BROKER_PROBE = """
import socket
with socket.create_connection((BALANCER, 6380), timeout=10) as broker:
    broker.sendall(b"AUTH " + PASSWORD.encode() + b"\\r\\nINFO replication\\r\\nQUIT\\r\\n")
    answer = b""
    while chunk := broker.recv(65536):
        answer += chunk
print(answer.decode())
"""


def test_the_broker_frontend_leads_the_airflow_nodes_to_the_redis_master(lab):
    """Celery's broker_url names the balancer's frontend: from an Airflow
    node it reaches the Redis master; from anywhere else it answers
    nothing."""
    script = (f"BALANCER = {BALANCER!r}\nPASSWORD = {SECRETS['redis']['password']!r}\n"
              + BROKER_PROBE)
    answer = bin_lab("exec", CLUSTER_NODE, "--", "python3", "-", input=script).stdout
    assert "role:master" in answer, answer
    masters = [node for node in ("airflow-server1", "airflow-server2") if redis_master(node)]
    assert len(masters) == 1
    replid = next(line for line in redis_cli(masters[0], "INFO", "replication").splitlines()
                  if line.startswith("master_replid:"))
    assert replid.strip() in answer
    try:
        with socket.create_connection((BALANCER, 6380), timeout=10) as stranger:
            stranger.sendall(b"PING\r\n")
            answer = stranger.recv(64)
    except ConnectionError:  # closed or reset: nothing answered
        answer = b""
    assert answer == b""


def test_postgresql_authenticates_with_scram_sha_256_only(lab):
    hba = bin_lab("exec", PRIMARY, "--", "cat", "/etc/postgresql/15/main/pg_hba.conf").stdout
    host_lines = [line.split() for line in hba.splitlines()
                  if line.strip() and not line.lstrip().startswith("#") and line.split()[0] != "local"]
    assert host_lines and {line[-1] for line in host_lines} == {"scram-sha-256"}
    verifier = bin_lab("exec", PRIMARY, "--", "runuser", "-u", "postgres", "--", "psql", "-XAtc",
                       "select rolpassword from pg_authid where rolname = 'airflow'").stdout
    assert verifier.startswith("SCRAM-SHA-256$")

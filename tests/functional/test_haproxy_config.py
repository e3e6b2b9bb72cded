"""The haproxy state's configuration file, written by the state's own
file.managed (arguments from `state.show_sls haproxy`, only the file name
redirected to a temporary path) through Salt's loader, with the lab's pillar
for airflow-lb1, and checked with the host's Debian haproxy: the file HAProxy
accepts, the backends the pillar gives, check_cmd refusing a file HAProxy
refuses, and a real haproxy in front of tiny HTTP servers that answer /health
as Airflow 2.10's webservers do."""

import base64
import csv
import http.server
import io
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.conftest import REPO

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
LAB_NODE = "airflow-lb1"
LAB_SECRETS = yaml.safe_load((REPO / "pillar" / "lab" / "secrets.sls").read_text())
STATS_PASSWORD = LAB_SECRETS["haproxy"]["stats_password"]
SETTLE_SECONDS = 15
# The monitoring node of the live haproxy's pillar, which alone reads its metrics.
MONITORING_ADDRESS = "127.0.0.4"
# Straight to 127.0.0.x, whatever proxy the environment names.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The health endpoint of an Airflow 3 API server, as it answers with
# everything up...
HEALTH_PATH = "/api/v2/monitor/health"
HEALTHY = (
    '{"metadatabase":{"status":"healthy"},"scheduler":{"status":"healthy",'
    '"latest_scheduler_heartbeat":"2026-11-30T23:40:02.123456+00:00"},"triggerer":'
    '{"status":null,"latest_triggerer_heartbeat":null},"dag_processor":{"status":"healthy",'
    '"latest_dag_processor_heartbeat":"2026-11-30T23:40:01.654321+00:00"}}'
)
# ...when it cannot reach the metadata database (still with HTTP 200)...
DB_UNHEALTHY = HEALTHY.replace('"metadatabase":{"status":"healthy"}',
                               '"metadatabase":{"status":"unhealthy"}')
# ...and, with spaces (as Airflow 2's /health writes it), when the database
# is fine but no scheduler heartbeats: the webserver still serves, so it
# must stay in.
SCHEDULER_DOWN = json.dumps({
    "metadatabase": {"status": "healthy"},
    "scheduler": {"latest_scheduler_heartbeat": "2025-01-07T09:00:00+00:00", "status": "unhealthy"},
    "triggerer": {"latest_triggerer_heartbeat": None, "status": None},
    "dag_processor": {"latest_dag_processor_heartbeat": None, "status": None},
})
assert DB_UNHEALTHY != HEALTHY


def state_args(states, state_id):
    """The arguments of one state of show_sls's output, as a dict."""
    return {key: value for item in states[state_id]["file"] if isinstance(item, dict)
            for key, value in item.items()}


def config_state(loaders):
    states = loaders.modules.state.show_sls("haproxy")
    assert isinstance(states, dict), f"render errors: {states}"
    return state_args(states, "haproxy-config")


def write_config(loaders, path):
    """Run the state's file.managed, as the state would, into `path`."""
    args = config_state(loaders)
    args.pop("require", None)
    args["name"] = str(path)
    return loaders.states.file.managed(**args)


def haproxy_check(path):
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)


def pillar_tree(tmp_path, **environments):
    """A pillar_roots with the repository's top file, topology record and lab
    folder, plus one folder per keyword argument (environment name -> its
    init.sls data). The lab folder is copied without this checkout's
    local.sls, which the upgrade test writes while the lab comes up."""
    root = tmp_path / "pillar"
    root.mkdir()
    for name in ("top.sls", "topology.sls"):
        shutil.copy(REPO / "pillar" / name, root / name)
    shutil.copytree(REPO / "pillar" / "lab", root / "lab", ignore=shutil.ignore_patterns("local.sls"))
    for name, data in environments.items():
        (root / name).mkdir()
        (root / name / "init.sls").write_text(yaml.safe_dump(data))
    return root


@pytest.fixture(scope="module")
def lab_loaders(make_loaders, tmp_path_factory):
    return make_loaders(id=LAB_NODE, airflow_environment="lab",
                        pillar_roots={"base": [str(pillar_tree(tmp_path_factory.mktemp("lab")))]},
                        grains={"os_family": "Debian"})


def tls_files(directory):
    """The lab's TLS certificate and key, where the haproxy.tls state would
    write them, in directory; returns the certificate's path."""
    certificate = directory / "airflow.pem"
    certificate.write_text(LAB_SECRETS["haproxy"]["tls"]["certificate"])
    (directory / "airflow.pem.key").write_text(LAB_SECRETS["haproxy"]["tls"]["key"])
    return certificate


def lab_with(tmp_path, **haproxy):
    """A pillar environment `variant`: the lab's, with these haproxy settings
    and the TLS files in tmp_path."""
    haproxy.setdefault("tls_certificate_file", str(tls_files(tmp_path)))
    return pillar_tree(tmp_path, variant={"include": ["lab"], "haproxy": haproxy})


@pytest.fixture(scope="module")
def lab_config(make_loaders, tmp_path_factory):
    """(state result, path) of the lab's airflow-lb1 configuration."""
    tmp_path = tmp_path_factory.mktemp("lab")
    loaders = make_loaders(id=LAB_NODE, airflow_environment="variant",
                           pillar_roots={"base": [str(lab_with(tmp_path))]},
                           grains={"os_family": "Debian"})
    path = tmp_path / "haproxy.cfg"
    return write_config(loaders, path), path


def test_lab_config_is_written_private_and_accepted_by_haproxy(lab_config, lab_loaders):
    result, path = lab_config
    assert result.result is True, result.comment
    check = haproxy_check(path)
    assert check.returncode == 0, check.stdout + check.stderr
    stat = path.stat()
    assert oct(stat.st_mode & 0o777) == "0o640"
    assert (stat.st_uid, stat.st_gid) == (0, int(subprocess.check_output(
        ["getent", "group", "haproxy"], text=True).split(":")[2]))
    # The password is in the file, and neither in Salt's output nor in the
    # state's arguments.
    assert f'stats auth "admin:{STATS_PASSWORD}"' in path.read_text()
    assert STATS_PASSWORD not in repr(result.raw)
    assert STATS_PASSWORD not in repr(config_state(lab_loaders))


def test_lab_backends_are_both_webservers_and_both_flowers(lab_config):
    _, path = lab_config
    sections, current = {}, None
    for line in path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = line.strip()
            sections[current] = []
        elif current and line.strip().startswith("server "):
            sections[current].append(line.split()[1:3])
    assert sections["backend airflow-webservers"] == [
        ["airflow-server1", "10.11.12.10:8080"], ["airflow-server2", "10.11.12.20:8080"]]
    assert sections["backend airflow-flowers"] == [
        ["airflow-server1", "10.11.12.10:5555"], ["airflow-server2", "10.11.12.20:5555"]]
    text = path.read_text()
    for line in ("bind *:80", "bind *:5555", "bind *:8404", "option redispatch", "retries 2",
                 f"option httpchk GET {HEALTH_PATH}", "option httpchk GET /healthcheck",
                 "http-check expect status 200", "balance roundrobin", "stats uri /stats",
                 "stats refresh 5s", "http-request set-header X-Forwarded-Proto http",
                 "http-request set-header X-Forwarded-Proto https",
                 "http-request redirect scheme https code 301 unless { ssl_fc }"):
        assert f"    {line}\n" in text, line
    assert "inter 2s fall 2 rise 2" in text
    assert re.search(r"^    bind \*:443 ssl crt \S+/airflow.pem$", text, re.M)
    # Airflow 3's execution API: on the balancer's cluster address, from the
    # Airflow nodes only.
    assert "    bind 10.11.12.5:8080\n" in text
    assert "    tcp-request connection reject unless { src 10.11.12.10 10.11.12.20 10.11.12.30 }\n" \
        in text
    # The lab's monitoring node is the balancer itself: HAProxy's metrics
    # on its cluster address, for its own Prometheus only.
    assert ("    bind 10.11.12.5:8405\n"
            "    tcp-request connection reject unless { src 10.11.12.5 }\n") in text
    # The broker frontend follows the Redis master among both servers.
    start = text.index("listen redis-master")
    broker = text[start:text.index("\n\n", start)]
    assert "    bind 10.11.12.5:6380\n" in broker
    assert [line.split()[1:3] for line in broker.splitlines() if line.strip().startswith("server ")] \
        == [["airflow-server1", "10.11.12.10:6379"], ["airflow-server2", "10.11.12.20:6379"]]


def test_check_cmd_refuses_a_config_haproxy_refuses_and_keeps_the_file(
        make_loaders, tmp_path, lab_config):
    _, good = lab_config
    pillar = lab_with(tmp_path, balance="fastest-please")
    loaders = make_loaders(id=LAB_NODE, airflow_environment="variant",
                           pillar_roots={"base": [str(pillar)]}, grains={"os_family": "Debian"})
    target = tmp_path / "haproxy.cfg"
    shutil.copy(good, target)
    result = write_config(loaders, target)
    assert result.result is False
    assert "check_cmd execution failed" in result.comment
    assert "balance" in result.comment  # haproxy's own reason
    assert target.read_bytes() == good.read_bytes()


# -- a real haproxy in front of fake webservers and Flowers ------------------

class Backend(http.server.BaseHTTPRequestHandler):
    """Answers the health endpoint with the server's body, /healthcheck with
    its Flower status and anything else with its name and the request's
    headers."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        spec = self.server.spec
        if self.path == HEALTH_PATH:
            status, body = 200, spec["health"]
        elif self.path == "/healthcheck":
            status, body = spec["flower"], "OK"
        else:
            status, body = 200, json.dumps({"server": spec["name"], "headers": {name.lower(): value for name, value in self.headers.items()}})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


BACKENDS = [
    {"name": "web-healthy", "address": "127.0.0.1", "health": HEALTHY, "flower": 200},
    {"name": "web-db-down", "address": "127.0.0.2", "health": DB_UNHEALTHY, "flower": 503},
    {"name": "web-no-scheduler", "address": "127.0.0.3", "health": SCHEDULER_DOWN, "flower": 200},
]


class PrometheusStandIn(http.server.BaseHTTPRequestHandler):
    """The monitoring node's Prometheus, as far as HAProxy sees it."""

    def do_GET(self):
        body = f"prometheus: {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port(count):
    """`count` distinct ports free on 127.0.0.1 now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def stats_csv(port, auth=True):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/stats;csv")
    if auth:
        token = base64.b64encode(f"admin:{STATS_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with OPENER.open(request, timeout=2) as response:
        text = response.read().decode()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {(row["pxname"], row["svname"]): row for row in rows}


@pytest.fixture(scope="module")
def live(make_loaders, tmp_path_factory):
    """A haproxy, configured by the state with the lab's secrets, in front of
    BACKENDS (each a webserver and a Flower on one port of its address)."""
    tmp_path = tmp_path_factory.mktemp("live")
    servers = []
    try:
        backend_port = None
        for spec in BACKENDS:
            server = http.server.ThreadingHTTPServer((spec["address"], backend_port or 0), Backend)
            server.spec = spec
            backend_port = server.server_address[1]
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        airflow_port, tls_port, flower_port, stats_port, execution_port, metrics_port, \
            overview_port = free_port(7)
        prometheus = http.server.ThreadingHTTPServer((MONITORING_ADDRESS, 0), PrometheusStandIn)
        servers.append(prometheus)
        threading.Thread(target=prometheus.serve_forever, daemon=True).start()
        nodes = {LAB_NODE: {"address": "127.0.0.1", "roles": ["haproxy"]},
                 "monitor": {"address": MONITORING_ADDRESS, "roles": ["monitoring"]}}
        for spec in BACKENDS:
            nodes[spec["name"]] = {"address": spec["address"],
                                   "roles": ["airflow-webserver", "airflow-flower"]}
        pillar = pillar_tree(tmp_path, live={
            "include": ["lab.secrets"],
            "cluster": {"name": "live", "primary": "web-healthy", "nodes": nodes},
            "haproxy": {"bind_address": "127.0.0.1", "airflow_port": airflow_port,
                        "airflow_tls_port": tls_port,
                        "tls_certificate_file": str(tls_files(tmp_path)),
                        "flower_frontend_port": flower_port, "stats_port": stats_port,
                        "webserver_port": backend_port, "flower_port": backend_port,
                        "execution_api_port": execution_port,
                        "admin_socket": str(tmp_path / "admin.sock")},
            "monitoring": {"ports": {"haproxy": metrics_port, "overview": overview_port,
                                     "prometheus": prometheus.server_address[1]}},
        })
        loaders = make_loaders(id=LAB_NODE, airflow_environment="live",
                               pillar_roots={"base": [str(pillar)]},
                               grains={"os_family": "Debian"})
        config = tmp_path / "haproxy.cfg"
        result = write_config(loaders, config)
        assert result.result is True, result.comment
        log = open(tmp_path / "haproxy.log", "w")
        process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            yield {"airflow": airflow_port, "tls": tls_port, "flower": flower_port,
                   "execution": execution_port, "metrics": metrics_port,
                   "overview": overview_port,
                   "stats": stats_port, "certificate": tmp_path / "airflow.pem",
                   "process": process, "log": tmp_path / "haproxy.log"}
        finally:
            process.kill()
            process.wait(timeout=10)
            log.close()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def settled(live):
    """The stats CSV once every server has been checked (none still in its
    initial state), within SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        assert live["process"].poll() is None, live["log"].read_text()
        try:
            rows = stats_csv(live["stats"])
            servers = [row for (_, name), row in rows.items()
                       if name not in ("FRONTEND", "BACKEND")]
            # DOWN after `fall` failed checks; UP with a passed last check.
            if servers and all(row["status"] == "DOWN" or row["check_status"] == "L7OK"
                               for row in servers) \
                    and any(row["status"] == "DOWN" for row in servers):
                return rows
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"servers not settled after {SETTLE_SECONDS} s:\n"
                                 f"{live['log'].read_text()}")
        time.sleep(0.2)


def test_webserver_is_up_only_while_its_metadatabase_is_healthy(settled):
    backend = "airflow-webservers"
    assert settled[(backend, "web-healthy")]["status"] == "UP"
    assert settled[(backend, "web-db-down")]["status"] == "DOWN"
    assert settled[(backend, "web-db-down")]["check_status"] == "L7RSP"
    # No scheduler heartbeat is no reason to take a webserver out.
    assert settled[(backend, "web-no-scheduler")]["status"] == "UP"


def test_flower_is_up_only_while_its_healthcheck_answers_200(settled):
    backend = "airflow-flowers"
    assert settled[(backend, "web-healthy")]["status"] == "UP"
    assert settled[(backend, "web-db-down")]["status"] == "DOWN"
    assert settled[(backend, "web-no-scheduler")]["status"] == "UP"


def test_plain_http_to_airflow_is_redirected_to_https(live, settled):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as moved:
        opener.open(f"http://127.0.0.1:{live['airflow']}/home?x=1", timeout=5)
    assert moved.value.code == 301
    assert moved.value.headers["Location"] == f"https://127.0.0.1:{live['airflow']}/home?x=1"


def test_requests_go_to_healthy_webservers_over_tls_with_forwarded_headers(live, settled):
    trusted = ssl.create_default_context(cafile=str(live["certificate"]))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=trusted))
    seen = set()
    for _ in range(6):
        with opener.open(f"https://127.0.0.1:{live['tls']}/home", timeout=5) as r:
            answer = json.loads(r.read())
        seen.add(answer["server"])
        assert answer["headers"]["x-forwarded-proto"] == "https"
        assert answer["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen == {"web-healthy", "web-no-scheduler"}  # round robin, never web-db-down


def execution_api_call(port, source):
    """GET /execution/ through the execution API frontend from ``source``:
    the answering server's name, or None when the connection is refused."""
    reply = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=(source, 0)) as connection:
            connection.sendall(b"GET /execution/health HTTP/1.0\r\nHost: x\r\n\r\n")
            while chunk := connection.recv(65536):
                reply += chunk
    except ConnectionError:
        return None
    if not reply:
        return None
    return json.loads(reply.partition(b"\r\n\r\n")[2])["server"]


def test_its_prometheus_metrics_answer_the_monitoring_node_only(live, settled):
    def metrics(source):
        try:
            with socket.create_connection(("127.0.0.1", live["metrics"]), timeout=5,
                                          source_address=(source, 0)) as connection:
                connection.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                reply = b""
                while chunk := connection.recv(65536):
                    reply += chunk
        except ConnectionError:
            return None
        return reply.decode() or None

    text = metrics(MONITORING_ADDRESS)
    assert ('haproxy_server_status{proxy="airflow-webservers",server="web-healthy",state="UP"} 1'
            in text), text[:2000]
    assert ('haproxy_server_status{proxy="airflow-webservers",server="web-db-down",state="DOWN"} 1'
            in text)
    assert metrics("127.0.0.9") is None


def test_the_execution_api_answers_airflow_nodes_only(live, settled):
    assert execution_api_call(live["execution"], "127.0.0.2") in {"web-healthy", "web-no-scheduler"}
    assert execution_api_call(live["execution"], "127.0.0.9") is None


def test_stats_page_needs_its_credentials(live, settled):
    with pytest.raises(urllib.error.HTTPError) as refused:
        stats_csv(live["stats"], auth=False)
    assert refused.value.code == 401
    request = urllib.request.Request(f"http://127.0.0.1:{live['stats']}/stats")
    token = base64.b64encode(f"admin:{STATS_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with OPENER.open(request, timeout=2) as response:
        assert response.status == 200
    wrong = urllib.request.Request(f"http://127.0.0.1:{live['stats']}/stats")
    wrong.add_header("Authorization", "Basic " + base64.b64encode(b"admin:wrong").decode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        OPENER.open(wrong, timeout=2)
    assert refused.value.code == 401



def test_prometheus_and_its_overview_page_need_the_stats_credentials(live, settled):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    context = ssl.create_default_context(cafile=str(live["certificate"]))
    context.check_hostname = False
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect(),
                                         urllib.request.HTTPSHandler(context=context))

    def get(path, password=None):
        request = urllib.request.Request(f"https://127.0.0.1:{live['overview']}{path}")
        if password:
            token = base64.b64encode(f"admin:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with opener.open(request, timeout=5) as response:
                return response.status, response.headers.get("Location"), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Location"), ""

    assert get("/graph")[0] == 401
    assert get("/graph", "wrong")[0] == 401
    assert get("/graph", STATS_PASSWORD) == (200, None, "prometheus: /graph")
    assert get("/", STATS_PASSWORD)[:2] == (302, "/consoles/airflow.html")

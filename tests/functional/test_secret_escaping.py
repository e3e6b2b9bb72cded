"""Secrets with any printable character (tests/secret_cases.py), written by
the states and read by the real programs: a PostgreSQL server (the
replication role set by pg_role.present, a login through the rendered
.pgpass, and Airflow's database URL), a redis-server started with the
rendered requirepass and masterauth lines (and Celery's broker URL), and
HAProxy's statistics page behind the rendered `stats auth`."""

import base64
import subprocess
import urllib.error
import urllib.request

import pytest
import redis
import yaml

from tests.functional.pg_cluster import (  # noqa: F401 (fixtures)
    BIN,
    as_postgres,
    copy_template,
    give_to_postgres,
    pg_nodes,
)
from tests.functional.redis_pair import REDIS_SERVER, free_port, wait_until
from tests.functional.test_haproxy_config import HAPROXY, OPENER, haproxy_check, tls_files
from tests.secret_cases import (
    SECRETS,
    kombu_url_password,
    odd_node_rendered,
    odd_pillar,
    read_airflow_cfg,
    sqlalchemy_url_password,
    state_args,
    write_file_state,
)


@pytest.fixture(scope="module")
def odd_node(salt_factories, tmp_path_factory):
    """odd_node(id, **pillar overrides of the lab's haproxy) -> (Loaders,
    highstate) of that lab node with SECRETS."""
    root = tmp_path_factory.mktemp("odd")
    pillar = odd_pillar(root / "pillar")

    def _node(node, haproxy=None):
        environment = "odd"
        if haproxy:
            environment = "odd_haproxy"
            (pillar / environment).mkdir(exist_ok=True)
            (pillar / environment / "init.sls").write_text(
                yaml.safe_dump({"include": ["odd"], "haproxy": haproxy}))
        return odd_node_rendered(salt_factories, f"{node}-{environment}-functional", node,
                                 pillar, environment, root / "no-record.json")

    return _node


# --- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server1(odd_node):
    return odd_node("airflow-server1")


AIRFLOW_LOGIN = "host postgres airflow 127.0.0.1/32 scram-sha-256\n"


def states(node):
    node.module  # loads the node's loaders with its pg_replication settings
    return node._loaders.states


@pytest.fixture
def primary(pg_nodes):
    """pg-a from the template, with a login for the airflow role too."""
    node = pg_nodes.a
    node.wipe()
    if AIRFLOW_LOGIN not in node.hba_file.read_text():
        with node.hba_file.open("a") as hba:
            hba.write(AIRFLOW_LOGIN)
    copy_template(pg_nodes, node)
    node.start()
    try:
        yield node
    finally:
        node.stop("immediate")


def can_log_in(node, user, passfile=None, password=None):
    """Whether psql, without a prompt, logs in as user over TCP with that
    libpq password file or password."""
    env = {"PGPASSFILE": str(passfile)} if passfile else {"PGPASSWORD": password}
    result = as_postgres(BIN / "psql", "-X", "-w", "-A", "-t", "-h", "127.0.0.1", "-p", node.port,
                         "-U", user, "-d", "postgres", "-c", "select 1", env=env, check=False)
    return result.returncode == 0 and result.stdout.strip() == "1"


def test_the_rendered_pgpass_logs_in_with_the_role_pg_role_set(server1, primary, tmp_path):
    _, highstate = server1
    role = state_args(highstate, "postgresql-replication-role", "pg_role")
    present = states(primary).pg_role.present
    result = present(name=role["name"], password=role["password"], replication=True)
    assert result.result is True, result.comment
    passfile = primary.root / "odd.pgpass"
    passfile.write_text(state_args(highstate, "postgresql-passfile", "file")["contents"] + "\n")
    give_to_postgres(passfile, 0o600)
    assert can_log_in(primary, "replicator", passfile=passfile)
    # The test can tell: a password file with another password does not.
    passfile.write_text("*:*:*:replicator:" + SECRETS["postgresql:replication_password"].strip() + "\n")
    assert not can_log_in(primary, "replicator", passfile=passfile)


def test_airflow_database_url_logs_in(server1, primary, tmp_path):
    loaders, highstate = server1
    owner = state_args(highstate, "postgresql-airflow-owner", "pg_role")
    present = states(primary).pg_role.present
    assert present(name=owner["name"], password=owner["password"]).result is True
    config = read_airflow_cfg(write_file_state(loaders, highstate, "airflow-config",
                                               tmp_path / "airflow.cfg"))
    user, password = sqlalchemy_url_password(config[("database", "sql_alchemy_conn")])
    assert can_log_in(primary, user, password=password)


# --- Redis --------------------------------------------------------------------------


@pytest.fixture
def odd_redis(server1, tmp_path):
    """A redis-server with the rendered requirepass and masterauth lines,
    on a free loopback port; yields its port."""
    loaders, highstate = server1
    rendered = write_file_state(loaders, highstate, "redis-auth", tmp_path / "rendered.conf")
    auth_lines = [line for line in rendered.splitlines()
                  if line.startswith(("requirepass ", "masterauth "))]
    assert len(auth_lines) == 2
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f'dir "{tmp_path}"',
                                 "save \"\"", *auth_lines]) + "\n")
    process = subprocess.Popen([REDIS_SERVER, str(config)], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), 10, "redis-server")
        assert process.poll() is None, "redis-server refused the rendered lines"
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(port):
    try:
        redis.Redis(port=port, socket_timeout=1).ping()
    except redis.AuthenticationError:
        return True
    except redis.ConnectionError:
        return False
    return True


def test_redis_takes_the_password_from_the_rendered_lines(odd_redis):
    password = SECRETS["redis:password"]
    client = redis.Redis(port=odd_redis, password=password, decode_responses=True)
    assert client.ping()
    assert client.config_get("masterauth") == {"masterauth": password}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=odd_redis, password=password.strip()).ping()


def test_celery_broker_url_authenticates(server1, odd_redis, tmp_path):
    loaders, highstate = server1
    config = read_airflow_cfg(write_file_state(loaders, highstate, "airflow-config",
                                               tmp_path / "airflow.cfg"))
    broker = config[("celery", "broker_url")]
    assert redis.Redis(port=odd_redis, password=kombu_url_password(broker)).ping()
    # redis-py's own URL parser, pointed at this server.
    local = broker.rsplit("@", 1)[0] + f"@127.0.0.1:{odd_redis}/0"
    assert redis.Redis.from_url(local).ping()


# --- HAProxy ------------------------------------------------------------------------


def test_haproxy_stats_page_takes_the_password(odd_node, tmp_path):
    stats_port = free_port()
    loaders, highstate = odd_node("airflow-lb1", haproxy={
        "bind_address": "127.0.0.1", "airflow_port": free_port(), "airflow_tls_port": free_port(),
        "flower_frontend_port": free_port(), "stats_port": stats_port,
        "execution_api_bind_address": "127.0.0.1", "execution_api_port": free_port(),
        "metrics_bind_address": "127.0.0.1",
        "broker_bind_address": "127.0.0.1", "broker_port": free_port(),
        "tls_certificate_file": str(tls_files(tmp_path)),
        "admin_socket": str(tmp_path / "admin.sock")})
    config = tmp_path / "haproxy.cfg"
    write_file_state(loaders, highstate, "haproxy-config", config)
    check = haproxy_check(config)
    assert check.returncode == 0, check.stdout + check.stderr
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def status(password):
            request = urllib.request.Request(f"http://127.0.0.1:{stats_port}/stats")
            token = base64.b64encode(f"admin:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
            try:
                with OPENER.open(request, timeout=2) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code
            except (urllib.error.URLError, ConnectionError):
                return None

        password = SECRETS["haproxy:stats_password"]
        wait_until(lambda: status(password) is not None, 10, "haproxy's stats page")
        assert status(password) == 200
        assert status(password.strip()) == 401
    finally:
        process.kill()
        process.wait(timeout=10)

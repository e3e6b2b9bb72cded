"""Any printable character works in every secret: the lab's pillar with
each secret made of the characters that break configuration files
(tests/secret_cases.py), rendered through Salt's loader for a node, and each
file read back the way its program reads it. Real servers read theirs in
tests/functional/test_secret_escaping.py."""

import hashlib
import json

import psycopg2.extensions
import pytest
import redis.connection

from ha_core import pg_facts, redis_facts
from tests.secret_cases import (
    ODD,
    SECRETS,
    kombu_url_password,
    odd_node_rendered,
    odd_pillar,
    read_airflow_cfg,
    read_environment_file,
    sqlalchemy_url_password,
    state_args,
    write_file_state,
)


@pytest.fixture(scope="module")
def odd_node(salt_factories, tmp_path_factory):
    """odd_node(id) -> (Loaders, highstate) of that lab node with SECRETS."""
    pillar = odd_pillar(tmp_path_factory.mktemp("odd") / "pillar")
    nodes = {}

    def _node(node):
        if node not in nodes:
            nodes[node] = odd_node_rendered(
                salt_factories, f"{node}-odd-secrets", node, pillar, "odd",
                tmp_path_factory.getbasetemp() / "no-record.json")
        return nodes[node]

    return _node


def test_every_secret_holds_odd_characters():
    for value in SECRETS.values():
        for char in " @/#%&:?'\"\\$":
            assert char in value
        assert value.startswith(" ") and value.endswith(" ")


@pytest.mark.parametrize("node", ["airflow-server1", "airflow-worker1", "airflow-lb1"])
def test_the_validation_accepts_printable_secrets(odd_node, node):
    _, highstate = odd_node(node)
    assert "common-packages" in highstate


def airflow_cfg(odd_node, node, tmp_path):
    loaders, highstate = odd_node(node)
    return write_file_state(loaders, highstate, "airflow-config", tmp_path / "airflow.cfg")


@pytest.mark.parametrize("node", ["airflow-server1", "airflow-worker1"])
def test_airflow_reads_the_database_and_broker_passwords_back(odd_node, node, tmp_path):
    config = read_airflow_cfg(airflow_cfg(odd_node, node, tmp_path))
    database = config[("database", "sql_alchemy_conn")]
    assert sqlalchemy_url_password(database) == ("airflow", SECRETS["postgresql:airflow_password"])
    backend = config[("celery", "result_backend")]
    assert backend == "db+" + database
    broker = config[("celery", "broker_url")]
    assert kombu_url_password(broker) == SECRETS["redis:password"]
    assert redis.connection.parse_url(broker)["password"] == SECRETS["redis:password"]
    assert broker.endswith("@10.11.12.5:6380/0")  # the balancer's broker frontend


def test_airflow_reads_the_keys_back(odd_node, tmp_path):
    config = read_airflow_cfg(airflow_cfg(odd_node, "airflow-server1", tmp_path))
    assert config[("core", "fernet_key")] == "7w5rJ9yqv3m0Zb3Sx1F2nQm4cA8dE6fG0hJ2kL4nP6s="
    # The API server's secret key and the JWT secret are digests of the
    # pillar's webserver key, each its own, the same on every node.
    def digest(purpose):
        return hashlib.sha256(
            (f"airflow {purpose}: " + SECRETS["airflow:webserver_secret_key"]).encode()).hexdigest()

    other = read_airflow_cfg(airflow_cfg(odd_node, "airflow-worker1", tmp_path))
    for node_config in (config, other):
        assert node_config[("api", "secret_key")] == digest("webserver secret key")
        assert node_config[("api_auth", "jwt_secret")] == digest("jwt secret")
    # Flower's password is not in airflow.cfg, which every Airflow node has.
    assert ("celery", "flower_basic_auth") not in config
    text = (tmp_path / "airflow.cfg").read_text()
    for value in SECRETS.values():
        assert value not in text


def test_flower_reads_its_password_from_its_environment_file(odd_node, tmp_path):
    _, highstate = odd_node("airflow-server1")
    args = state_args(highstate, "airflow-flower-environment-file", "file")
    assert args["mode"] == "0600" and args["show_changes"] is False
    variables = read_environment_file(args["contents"])
    # Flower splits FLOWER_BASIC_AUTH at commas into user:password pairs.
    assert variables["FLOWER_BASIC_AUTH"].split(",") == ["flower:" + SECRETS["airflow:flower:password"]]


def test_only_flower_reads_the_flower_environment_file(odd_node, tmp_path):
    loaders, highstate = odd_node("airflow-server1")
    units = {name: write_file_state(loaders, highstate, f"airflow-{name}-unit",
                                    tmp_path / f"{name}.service")
             for name in ("flower", "scheduler", "api-server")}
    assert "EnvironmentFile=/etc/default/airflow-flower\n" in units["flower"]
    assert "airflow-flower" not in units["scheduler"] + units["api-server"]
    watched = state_args(highstate, "airflow-flower", "service")["watch"]
    assert {"file": "airflow-flower-environment-file"} in watched
    _, worker = odd_node("airflow-worker1")
    assert "airflow-flower-environment-file" not in worker


def test_the_pgpass_line_gives_libpq_the_password(odd_node):
    _, highstate = odd_node("airflow-server1")
    line = state_args(highstate, "postgresql-passfile", "file")["contents"]
    assert "\n" not in line
    # libpq's reading (passwordFromFile): fields split at unescaped ':',
    # a backslash takes the next character as it is.
    fields, field, escaped = [], "", False
    for char in line:
        if escaped:
            field, escaped = field + char, False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields, field = fields + [field], ""
        else:
            field += char
    assert fields + [field] == ["*", "*", "*", "replicator", SECRETS["postgresql:replication_password"]]


def test_sls_arguments_carry_the_passwords_unchanged(odd_node):
    _, highstate = odd_node("airflow-server1")
    assert state_args(highstate, "postgresql-replication-role", "pg_role")["password"] == \
        SECRETS["postgresql:replication_password"]
    assert state_args(highstate, "postgresql-airflow-owner", "pg_role")["password"] == \
        SECRETS["postgresql:airflow_password"]
    users_state = state_args(highstate, "airflow-users", "cmd")
    # Salt passes stdin as it is only with stdin_raw_newlines (else a
    # backslash and n become a newline).
    assert users_state["stdin_raw_newlines"] is True
    users = json.loads(users_state["stdin"])
    assert {name: user["password"] for name, user in users.items()} == {
        "admin": SECRETS["airflow:admin:password"],
        "viewer": SECRETS["airflow:users:viewer:password"],
        "operator": SECRETS["airflow:users:operator:password"],
    }
    for value in SECRETS.values():
        assert value not in state_args(highstate, "airflow-users", "cmd")["name"]


def test_redis_auth_file_gives_the_password_to_redis_and_to_the_module(odd_node, tmp_path):
    loaders, highstate = odd_node("airflow-server1")
    text = write_file_state(loaders, highstate, "redis-auth", tmp_path / "auth.conf")
    password = SECRETS["redis:password"]
    assert redis_facts.requirepass_from_config(text, "auth.conf") == password
    directives = [args for _, args in redis_facts.config_directives(text, "auth.conf")]
    assert ["masterauth", password] in directives
    settings = write_file_state(loaders, highstate, "redis-settings", tmp_path / "redis.conf")
    assert password not in settings


def test_haproxy_cfg_quotes_the_stats_password(odd_node, tmp_path):
    loaders, highstate = odd_node("airflow-lb1")
    text = write_file_state(loaders, highstate, "haproxy-config", tmp_path / "haproxy.cfg")
    line = next(line.strip() for line in text.splitlines() if line.strip().startswith("stats auth"))
    # Weak quoting: \\ \" \$ escaped, the rest as it is.
    quoted = ("admin:" + SECRETS["haproxy:stats_password"]).replace("\\", "\\\\") \
        .replace('"', '\\"').replace("$", "\\$")
    assert line == f'stats auth "{quoted}"'


def test_haproxy_broker_check_logs_in_to_redis_with_the_password(odd_node, tmp_path):
    loaders, highstate = odd_node("airflow-lb1")
    text = write_file_state(loaders, highstate, "haproxy-config", tmp_path / "haproxy.cfg")
    auth = next(line.split()[-1] for line in text.splitlines()
                if line.strip().startswith("tcp-check send-binary"))
    assert resp_commands(bytes.fromhex(auth)) == [[b"AUTH", SECRETS["redis:password"].encode()]]


def resp_commands(data):
    """The commands in ``data`` as Redis reads them: each an array (`*N`)
    of bulk strings (`$LENGTH`, then exactly that many bytes)."""
    commands = []
    while data:
        count, _, data = data.removeprefix(b"*").partition(b"\r\n")
        words = []
        for _ in range(int(count)):
            length, _, data = data.removeprefix(b"$").partition(b"\r\n")
            words.append(data[:int(length)])
            assert data[int(length):int(length) + 2] == b"\r\n"
            data = data[int(length) + 2:]
        commands.append(words)
    return commands


def test_a_conninfo_value_reads_back_in_libpq():
    conninfo = pg_facts.format_conninfo({"host": "127.0.0.1", "user": "replicator",
                                         "password": ODD, "passfile": "/var/lib/a b/.pgpass"})
    parsed = psycopg2.extensions.parse_dsn(conninfo)
    assert parsed["password"] == ODD and parsed["passfile"] == "/var/lib/a b/.pgpass"
    assert pg_facts.parse_conninfo(conninfo)["password"] == ODD


@pytest.mark.parametrize("text, expected", [
    ('A=plain\n', {"A": "plain"}),
    ('# comment\n; comment\nA=  spaced out  \n', {"A": "spaced out"}),
    ('A="x \\" \\\\ \\` \\$ \\q y"\n', {"A": 'x " \\ ` $ \\q y'}),
    ("A='\\ $x \"'\n", {"A": '\\ $x "'}),
    ('A=a\\ b\\\\c\\\n', {"A": "a b\\c"}),
    ('A="one" \'two\' three\n', {"A": "onetwothree"}),
    ('not an assignment\nB=1', {"B": "1"}),
])
def test_the_environment_file_reader_follows_systemd(text, expected):
    assert read_environment_file(text) == expected

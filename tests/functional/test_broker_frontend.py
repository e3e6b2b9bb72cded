"""The load balancer's broker frontend (salt/haproxy), which Airflow's
[celery] broker_url names: the state's haproxy.cfg, run by the host's
HAProxy in front of two real Redis servers (a master and its replica, on
127.0.0.2 and 127.0.0.3, with a password only RESP framing carries
intact). It reaches the master only, follows a FAILOVER within seconds,
cuts the connections to the demoted master, and answers the Airflow nodes
only. A runbook's switch (haproxy_admin through the admin socket) cuts a
waiting client off before its master turns replica."""

import signal
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
import redis
import yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO
from tests.functional.redis_pair import RedisServer, free_port, wait_until
from tests.functional.test_haproxy_config import (HAPROXY, LAB_NODE, pillar_tree, tls_files,
                                                  write_config)

# Spaces, a quote, `$` and `%`: each would break an inline command or
# HAProxy's quoting.
PASSWORD = "b r'oker $HOME %s"
# The load balancer is also the Airflow node here, so that the tests'
# clients, on 127.0.0.1, are the Airflow node's; 127.0.0.5 is no node.
STRANGER = "127.0.0.5"
FOLLOW_SECONDS = 10
# The frontend's name, which the runbook's haproxy_admin calls give.
BACKEND = yaml.safe_load((REPO / "salt" / "haproxy" / "defaults.yaml").read_text())[
    "haproxy"]["broker_backend"]
HARD_STOP_SECONDS = 2


@pytest.fixture(scope="module")
def brokers(tmp_path_factory):
    """(master, replica) on 127.0.0.2 and 127.0.0.3, one port, the replica's
    link up."""
    base = tmp_path_factory.mktemp("brokers")
    port = free_port()
    master, replica = (RedisServer(name, base / name, port, PASSWORD, address=address)
                       for name, address in (("server-a", "127.0.0.2"), ("server-b", "127.0.0.3")))
    master.write_config()
    replica.write_config(replicaof=master)
    try:
        master.start()
        replica.start()
        wait_until(replica.link_up, 10, "the replica's link to its master")
        yield master, replica
    finally:
        replica.stop()
        master.stop()


@pytest.fixture(scope="module")
def admin_socket(tmp_path_factory):
    """Where the frontend's HAProxy has its admin socket."""
    return str(tmp_path_factory.mktemp("admin") / "admin.sock")


@pytest.fixture(scope="module")
def frontend(make_loaders, tmp_path_factory, brokers, admin_socket):
    """HAProxy with the state's configuration for a pillar whose redis nodes
    are the two servers: its port and process."""
    tmp_path = tmp_path_factory.mktemp("frontend")
    master, _ = brokers
    broker_port, stats_port = free_port(), free_port()
    nodes = {LAB_NODE: {"address": "127.0.0.1", "roles": ["haproxy", "airflow-worker"]},
             "server-a": {"address": master.address, "roles": ["postgresql", "redis"]},
             "server-b": {"address": brokers[1].address, "roles": ["postgresql", "redis"]}}
    pillar = pillar_tree(tmp_path, live={
        "include": ["lab.secrets"],
        "cluster": {"name": "live", "primary": "server-a", "nodes": nodes},
        "redis": {"port": master.port, "password": PASSWORD},
        "haproxy": {"bind_address": "127.0.0.1", "broker_port": broker_port,
                    "airflow_port": free_port(), "airflow_tls_port": free_port(),
                    "flower_frontend_port": free_port(), "stats_port": stats_port,
                    "execution_api_port": free_port(),
                    "tls_certificate_file": str(tls_files(tmp_path)),
                    "admin_socket": admin_socket, "hard_stop_after": f"{HARD_STOP_SECONDS}s"},
    })
    loaders = make_loaders(id=LAB_NODE, airflow_environment="live",
                           pillar_roots={"base": [str(pillar)]}, grains={"os_family": "Debian"})
    config = tmp_path / "haproxy.cfg"
    result = write_config(loaders, config)
    assert result.result is True, result.comment
    assert PASSWORD not in config.read_text()  # sent as hex: no quoting to get wrong
    log = open(tmp_path / "haproxy.log", "w")
    # Master-worker mode, as the package's unit runs it: a reload (SIGUSR2)
    # starts a new process and leaves the old one its connections.
    process = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: role_through(broker_port) == "master", FOLLOW_SECONDS,
                   "the frontend reaching the master")
        yield SimpleNamespace(port=broker_port, process=process)
    finally:
        process.terminate()  # the master stops its workers, old and new
        process.wait(timeout=10)
        log.close()


def client(port):
    """A Redis client through the frontend."""
    return redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, decode_responses=True,
                       socket_timeout=2, socket_connect_timeout=2)


def role_through(port):
    """The role of the Redis server a fresh connection through the frontend
    reaches; None when the frontend closes it."""
    try:
        return client(port).info("replication")["role"]
    except (redis.ConnectionError, redis.TimeoutError):
        return None


def test_the_frontend_reaches_the_master_only(frontend, brokers):
    master, replica = brokers
    connection = client(frontend.port)
    connection.set("written-through-the-frontend", "1")
    assert master.client().get("written-through-the-frontend") == "1"
    wait_until(lambda: replica.client().get("written-through-the-frontend") == "1", 5,
               "the write replicated")


def test_it_answers_the_airflow_nodes_only(frontend):
    assert answer_to_a_stranger(frontend.port) == b""
    assert client(frontend.port).ping()


def answer_to_a_stranger(port):
    """What the frontend answers a PING from an address that is no node's
    (nothing: it closes or resets the connection)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=(STRANGER, 0)) as stranger:
            stranger.sendall(b"PING\r\n")
            return stranger.recv(64)
    except ConnectionError:
        return b""


def test_it_follows_a_failover_and_cuts_the_old_masters_connections(frontend, brokers, say):
    master, replica = brokers
    before = redis.connection.Connection(host="127.0.0.1", port=frontend.port, password=PASSWORD)
    before.connect()
    client(frontend.port).set("before-the-switch", "1")
    started = time.monotonic()
    master.client().execute_command("FAILOVER")
    wait_until(lambda: replica.replication()["role"] == "master", 10, "server-b promoted")
    promoted = time.monotonic()
    wait_until(lambda: (role_through(frontend.port) == "master"
                        and client(frontend.port).get("before-the-switch") == "1"
                        and client(frontend.port).set("after-the-switch", "1")),
               FOLLOW_SECONDS, "the frontend reaching the new master")
    followed = time.monotonic()
    assert replica.client().get("after-the-switch") == "1"
    # The connection opened before the switch, to the demoted master, was
    # cut: the client reconnects, to the new master, instead of writing to
    # a replica (READONLY).
    with pytest.raises(redis.ConnectionError):
        before.send_command("PING")
        before.read_response()
    say(f"BENCHMARK broker frontend: FAILOVER took {promoted - started:.2f} s, the frontend "
        f"reached the new master {followed - promoted:.2f} s later")


def master_and_replica(brokers):
    """The two servers, the one that is the master now first."""
    first, second = brokers
    return (first, second) if first.replication()["role"] == "master" else (second, first)


def test_a_runbook_switch_cuts_a_waiting_worker_off_before_its_master_turns_replica(
        frontend, brokers, admin_socket, make_loaders, say):
    """What airflow_ha.redis_switch does around the FAILOVER. A client blocked
    on the master, as a Celery worker waits for a task (BRPOP), would get
    an UNBLOCKED error when the master turns replica, and the worker stops
    on it; a lost connection it survives, reconnecting through the
    frontend."""
    admin = make_loaders(id=LAB_NODE).modules.haproxy_admin
    old, new = master_and_replica(brokers)
    waiting = redis.Redis(host="127.0.0.1", port=frontend.port, password=PASSWORD)
    waiting.ping()
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(brpop_outcome(waiting)))
    worker.start()
    wait_until(lambda: old.client().info("clients")["blocked_clients"] == 1, 5,
               "the worker waiting on the master")

    drained = admin.set_server_state(BACKEND, old.name, "maint", admin_socket,
                                     cut_connections=True)
    worker.join(timeout=5)

    assert (drained[old.name]["address"], drained[old.name]["admin"]) == (old.address, "maint")
    assert outcome == ["ConnectionError"]
    assert role_through(frontend.port) is None  # the replica's check keeps it out too
    started = time.monotonic()
    old.client().execute_command("FAILOVER")
    wait_until(lambda: new.replication()["role"] == "master", 10, f"{new.name} promoted")
    ready = admin.set_server_state(BACKEND, [old.name, new.name], "ready", admin_socket)
    assert {name: state["admin"] for name, state in ready.items()} == {
        old.name: "ready", new.name: "ready"}
    wait_until(lambda: role_through(frontend.port) == "master" and client(frontend.port).set("after", "1"),
               FOLLOW_SECONDS, "the frontend reaching the new master")
    assert new.client().get("after") == "1"
    say(f"BENCHMARK broker frontend, runbook switch: a waiting worker cut off, then the "
        f"frontend reached the new master {time.monotonic() - started:.2f} s after FAILOVER")


def brpop_outcome(connection):
    """How a BRPOP on connection ends: the name of the error it raised."""
    try:
        connection.brpop("celery", timeout=30)
    except redis.RedisError as error:
        return type(error).__name__
    return "an item, or its timeout"


def test_the_admin_socket_refuses_an_unknown_server_or_state(frontend, admin_socket,
                                                             make_loaders):
    admin = make_loaders(id=LAB_NODE).modules.haproxy_admin
    with pytest.raises(CommandExecutionError, match=f"HAProxy refused 'set server "
                                                   f"{BACKEND}/server-c state maint': "):
        admin.set_server_state(BACKEND, "server-c", "maint", admin_socket)
    with pytest.raises(SaltInvocationError, match="state must be one of ready, drain, maint"):
        admin.set_server_state(BACKEND, "server-a", "down", admin_socket)
    with pytest.raises(CommandExecutionError, match="did not answer .* level admin"):
        admin.server_states(BACKEND, admin_socket + ".missing")


def test_a_reload_lets_go_of_the_old_processs_connections(frontend):
    """After a reload the old HAProxy process keeps its connections, and the
    admin socket, the new process's, cannot cut them: hard-stop-after
    closes them, and the client reconnects, to the new process."""
    before = redis.connection.Connection(host="127.0.0.1", port=frontend.port, password=PASSWORD)
    before.connect()
    frontend.process.send_signal(signal.SIGUSR2)
    reloaded = time.monotonic()

    wait_until(lambda: lost(before), HARD_STOP_SECONDS + 8, "the old process closing it")

    assert time.monotonic() - reloaded >= HARD_STOP_SECONDS - 0.5  # served until then
    wait_until(lambda: role_through(frontend.port) == "master", FOLLOW_SECONDS,
               "the new process reaching the master")


def lost(connection):
    """Whether connection no longer answers a PING."""
    try:
        connection.send_command("PING")
        connection.read_response()
    except redis.ConnectionError:
        return True
    return False

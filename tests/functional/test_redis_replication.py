"""redis_replication against real redis-servers on 127.0.0.1: a master and
its replica (tests/functional/redis_pair.py), each node with its own minion
options, the password read from its redis.conf as password_file and its role
saved to its own role file, which its redis.conf includes."""

import threading
import time
from dataclasses import dataclass

import pytest
import redis
from salt.exceptions import CommandExecutionError

from tests.functional.redis_pair import (  # noqa: F401 (fixtures)
    RedisServer,
    redis_pair,
    redis_servers,
    wait_until,
)

BURST_KEYS = 20_000
BURST_BATCH = 1_000
CATCH_UP_SECONDS = 5
# Acknowledged writes before promote is called: the writer keeps going
# through the promotion until the old master refuses writes.
WRITES_BEFORE_PROMOTE = 2_000


@dataclass
class Node:
    server: RedisServer
    module: object  # loaders.modules.redis_replication


def node_module(make_loaders, server, **settings):
    """redis_replication as the minion of `server` loads it; its password
    comes from the server's redis.conf unless settings say otherwise."""
    settings.setdefault("password_file", str(server.config_file))
    settings.setdefault("role_file", str(server.role_file))
    loaders = make_loaders(
        id=server.name,
        redis_replication={"host": "127.0.0.1", "port": server.port, **settings},
    )
    return loaders.modules.redis_replication


@pytest.fixture(scope="module")
def modules(redis_servers, make_loaders):  # noqa: F811
    # Loading the modules takes seconds: once per node for the whole module.
    return tuple(node_module(make_loaders, server) for server in redis_servers)


@pytest.fixture
def pair(redis_pair, modules):  # noqa: F811
    """(a, b): a the master, b its replica."""
    return tuple(Node(server, module) for server, module in zip(redis_pair, modules))


def replicaof_lines(server):
    """The replicaof lines of the server's role file."""
    return [line for line in server.role_file.read_text().splitlines()
            if line.startswith(("replicaof", "slaveof"))]


def assert_redis_conf_untouched(*servers):
    """The module never edits redis.conf: that file is Salt's."""
    for server in servers:
        assert server.config_file.read_bytes() == server.config_written, (
            f"{server.name}'s redis.conf was modified")


def restart(*servers):
    """Stop the servers, then start them again from their files."""
    for server in servers:
        server.stop()
    for server in servers:
        server.start()


def test_status_of_a_master_lists_its_replica_online(pair):
    a, b = pair
    a.server.client().set("k", "v")
    wait_until(lambda: b.server.client().get("k") == "v", CATCH_UP_SECONDS,
               "the write on the replica")

    status = a.module.status()

    assert status["role"] == "master"
    assert status["master_repl_offset"] > 0
    [replica] = status["connected_replicas"]
    assert (replica["ip"], replica["port"], replica["state"]) == (
        "127.0.0.1", b.server.port, "online")
    assert replica["offset"] + replica["lag_bytes"] == status["master_repl_offset"]
    assert replica["lag_seconds"] >= 0
    assert (status["role_file"], status["role_file_agrees"]) == (str(a.server.role_file), True)


def test_status_of_a_replica_shows_its_link_and_offsets(pair):
    a, b = pair
    a.server.client().set("k", "v")

    def caught_up():
        status = b.module.status()
        return status["lag_bytes"] == 0

    wait_until(caught_up, CATCH_UP_SECONDS, "the replica to catch up")
    status = b.module.status()

    assert status["role"] == "replica"
    assert (status["master_host"], status["master_port"]) == ("127.0.0.1", a.server.port)
    assert status["master_link_status"] == "up"
    assert status["master_link_down_seconds"] is None
    assert status["master_repl_offset"] == status["replica_repl_offset"] > 0
    assert status["master_replid"] == a.module.status()["master_replid"]
    # The initial role file, as Salt writes it, says the same.
    assert (status["role_file"], status["role_file_agrees"]) == (str(b.server.role_file), True)


def test_replica_catches_up_after_a_burst_of_writes(pair):
    a, b = pair
    offset_before = a.module.status()["master_repl_offset"]
    done = threading.Event()
    timings = {}

    def burst():
        pipeline = a.server.client().pipeline(transaction=False)
        timings["started"] = time.monotonic()
        for first in range(0, BURST_KEYS, BURST_BATCH):
            for number in range(first, first + BURST_BATCH):
                pipeline.set(f"burst:{number}", "x" * 100)
            pipeline.execute()
        timings["written"] = time.monotonic()
        done.set()

    writer = threading.Thread(target=burst)
    writer.start()
    lags_during = []
    while not done.is_set():
        lags_during.append(b.module.status()["lag_bytes"])
    writer.join()
    while (lag := b.module.status()["lag_bytes"]) != 0:
        assert time.monotonic() - timings["written"] < CATCH_UP_SECONDS, (
            f"replica still {lag} bytes behind")
    caught_up = time.monotonic()

    stream = a.module.status()["master_repl_offset"] - offset_before
    known = [lag for lag in lags_during if lag is not None]
    print(f"\nburst: {BURST_KEYS} SETs in pipelines of {BURST_BATCH}, {stream} bytes of "
          f"replication stream in {timings['written'] - timings['started']:.3f} s; replica "
          f"lag sampled {len(lags_during)} times during it: max {max(known, default=0)} bytes, "
          f"mean {sum(known) / max(len(known), 1):.0f} bytes; caught up "
          f"{caught_up - timings['written']:.3f} s after the last write was acknowledged")
    assert b.server.client().dbsize() == BURST_KEYS


def test_planned_promotion_keeps_every_acknowledged_write(pair, caplog):
    a, b = pair
    offset_before = a.module.status()["master_repl_offset"]
    acknowledged = []
    ended_by = []

    def write_until_refused():
        client = a.server.client()
        number = 0
        while True:
            try:
                client.set(f"ack:{number}", number)
            except redis.RedisError as exc:
                ended_by.append(exc)
                return
            acknowledged.append(number)
            number += 1

    writer = threading.Thread(target=write_until_refused)
    writer.start()
    wait_until(lambda: len(acknowledged) >= WRITES_BEFORE_PROMOTE, 10, "writes on the master")
    try:
        result = b.module.promote(timeout=10)
    finally:
        # The writer stops at the old master's first refusal, after the switch.
        writer.join(timeout=10)
    print(f"\nplanned promotion: {result}; {len(acknowledged)} writes acknowledged, "
          f"{len(acknowledged) - WRITES_BEFORE_PROMOTE} of them after promote was called; "
          f"writer ended by: {ended_by[0]!r}")

    assert result["promoted"] is True
    assert result["method"] == "failover"
    assert result["old_master"] == f"127.0.0.1:{a.server.port}"
    assert result["old_master_role_saved"] is False
    assert isinstance(ended_by[0], redis.ReadOnlyError)
    values = b.server.client().mget([f"ack:{number}" for number in acknowledged])
    missing = [number for number, value in zip(acknowledged, values) if value != str(number)]
    assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:5]}"

    new_master, old_master = b.module.status(), a.module.status()
    assert offset_before < result["offset"] <= new_master["master_repl_offset"]
    assert new_master["role"] == "master"
    assert [(r["ip"], r["port"], r["state"]) for r in new_master["connected_replicas"]] == [
        ("127.0.0.1", a.server.port, "online")
    ]
    assert old_master["role"] == "replica"
    assert (old_master["master_host"], old_master["master_port"]) == ("127.0.0.1", b.server.port)
    assert old_master["master_link_status"] == "up"
    assert a.server.password not in repr(result) + caplog.text


def test_roles_survive_a_restart_once_the_old_master_saved_its_role(pair):
    a, b = pair
    a.server.client().set("before-promotion", "1")
    b.module.promote(timeout=10)

    # promote saved the new master's role, not the old master's (another host).
    assert replicaof_lines(b.server) == []
    assert b.module.status()["role_file_agrees"] is True
    assert replicaof_lines(a.server) == []
    assert a.module.status()["role_file_agrees"] is False

    saved = a.module.save_role()  # what the orchestration runs on the old master

    assert saved == {"role": "replica", "role_file": str(a.server.role_file), "changed": True}
    assert replicaof_lines(a.server) == [f"replicaof 127.0.0.1 {b.server.port}"]
    assert a.module.status()["role_file_agrees"] is True
    assert a.module.save_role()["changed"] is False
    assert_redis_conf_untouched(a.server, b.server)

    restart(b.server, a.server)
    wait_until(a.server.link_up, CATCH_UP_SECONDS, "the old master's link to the new one")

    assert b.server.replication()["role"] == "master"
    old_master = a.server.replication()
    assert (old_master["role"], old_master["master_port"]) == ("slave", b.server.port)
    assert a.server.client().get("before-promotion") == "1"
    assert a.module.status()["role_file_agrees"] is True
    assert b.module.status()["role_file_agrees"] is True


def test_promotion_is_refused_while_the_master_is_down_unless_forced(pair, caplog):
    a, b = pair
    a.server.client().set("before-crash", "1")
    wait_until(lambda: b.server.client().get("before-crash") == "1", CATCH_UP_SECONDS,
               "the write on the replica")
    a.server.crash()
    wait_until(lambda: not b.server.link_up(), CATCH_UP_SECONDS,
               "the replica to see its link down")

    with pytest.raises(CommandExecutionError) as refused:
        b.module.promote()
    print(f"\nrefusal: {refused.value}")
    message = str(refused.value)
    assert f"master 127.0.0.1:{a.server.port} is unreachable" in message
    assert "force=True" in message and "may lose" in message
    assert f"offset {b.module.status()['replica_repl_offset']}" in message
    assert b.server.replication()["role"] == "slave"

    result = b.module.promote(force=True)
    print(f"forced promotion: {result}")

    assert (result["promoted"], result["method"]) == (True, "forced")
    assert result["offset"] == b.module.status()["master_repl_offset"]
    assert result["old_master_role_saved"] is False
    assert b.module.status()["role"] == "master"
    assert replicaof_lines(b.server) == []
    assert b.module.status()["role_file_agrees"] is True
    assert_redis_conf_untouched(b.server)
    assert b.server.client().get("before-crash") == "1"
    assert "without its unreachable master" in caplog.text
    assert a.server.password not in message + repr(result) + caplog.text


def test_the_old_master_rejoins_the_forced_master_with_replicate_from(pair):
    a, b = pair
    a.server.crash()
    b.module.promote(force=True)
    b.server.client().set("written-on-new-master", "1")
    a.server.start()  # comes back as a master, its config unchanged
    assert a.module.status()["role"] == "master"

    result = a.module.replicate_from(f"127.0.0.1:{b.server.port}", timeout=10)
    print(f"\nreplicate_from: {result['comment']}")

    assert result["changed"] is True
    assert (result["role"], result["master_link_status"]) == ("replica", "up")
    assert (result["master_host"], result["master_port"]) == ("127.0.0.1", b.server.port)
    assert "was a master" in result["comment"]
    assert replicaof_lines(a.server) == [f"replicaof 127.0.0.1 {b.server.port}"]
    assert result["role_file_agrees"] is True
    assert_redis_conf_untouched(a.server, b.server)
    wait_until(lambda: a.server.client().get("written-on-new-master") == "1", CATCH_UP_SECONDS,
               "the new master's write on the old one")


def test_promote_on_a_master_is_refused(pair):
    a, _ = pair
    with pytest.raises(CommandExecutionError, match="already a master"):
        a.module.promote()
    assert a.module.status()["role"] == "master"


def test_replicate_from_makes_a_standalone_node_follow_and_is_idempotent(pair, make_loaders):
    a, b = pair
    b.server.client().replicaof("NO", "ONE")  # b on its own, a master without replicas
    b.server.client().set("only-on-b", "1")
    # Settings with the password itself rather than a password_file.
    a_with_password = node_module(make_loaders, a.server, password_file=None,
                                  password=a.server.password)

    result = a_with_password.replicate_from(f"127.0.0.1:{b.server.port}")
    assert result["changed"] is True
    assert (result["master_host"], result["master_port"], result["master_link_status"]) == (
        "127.0.0.1", b.server.port, "up")
    assert replicaof_lines(a.server) == [f"replicaof 127.0.0.1 {b.server.port}"]
    assert result["role_file_agrees"] is True
    wait_until(lambda: a.server.client().get("only-on-b") == "1", CATCH_UP_SECONDS,
               "b's data on a")

    again = a_with_password.replicate_from(f"127.0.0.1:{b.server.port}")
    assert again["changed"] is False
    assert again["comment"] == f"Already a replica of 127.0.0.1:{b.server.port} with its link up."
    assert (again["role"], again["role_file_agrees"]) == ("replica", True)

    # A hand edit makes a master of a at its next restart: status shows the
    # drift and replicate_from, with nothing else to do, corrects the file.
    a.server.role_file.write_text("# edited by hand\n")
    a.server.role_file.chmod(0o600)
    assert a_with_password.status()["role_file_agrees"] is False

    corrected = a_with_password.replicate_from(f"127.0.0.1:{b.server.port}")
    assert corrected["changed"] is True
    assert f"Corrected the role file {a.server.role_file}" in corrected["comment"]
    assert corrected["role_file_agrees"] is True
    assert replicaof_lines(a.server) == [f"replicaof 127.0.0.1 {b.server.port}"]
    assert a.server.role_file.stat().st_mode & 0o777 == 0o600
    assert_redis_conf_untouched(a.server, b.server)


def test_replicate_from_refuses_a_node_that_is_not_a_master(pair):
    a, b = pair
    # a following its own replica would leave the pair with no master at all.
    with pytest.raises(CommandExecutionError, match="is not a master"):
        a.module.replicate_from(f"127.0.0.1:{b.server.port}")
    assert a.module.status()["role"] == "master"


def test_replicate_from_refuses_this_node_itself(pair):
    a, _ = pair
    with pytest.raises(Exception, match="cannot follow itself"):
        a.module.replicate_from(f"127.0.0.1:{a.server.port}")

"""A new Redis password on a real master and its replica
(tests/functional/redis_pair.py), as orch.rotate gives it: accept_password
on each node (the pillar's new password accepted besides the old one,
masterauth switched, no restart, the replica's link never dropped), the
auth file rewritten, then retire_passwords: the old password refused, the
new one enough for clients and for the replica's next reconnection."""

import json
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
from tests.secret_cases import ODD

NEW_PASSWORD = ODD + "new redis "


@dataclass
class Node:
    server: RedisServer
    module: object  # loaders.modules.redis_replication
    states: object  # loaders.states.redis_replication
    auth_file: object  # its password_file

    def write_auth_file(self, password):
        """The auth file as salt/redis/files/auth.conf.jinja writes it."""
        quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
        self.auth_file.write_text(f"requirepass {quoted}\nmasterauth {quoted}\n")


@pytest.fixture(scope="module")
def pillar_root(tmp_path_factory):
    """A pillar with the new password at redis:password."""
    root = tmp_path_factory.mktemp("rotation-pillar")
    (root / "top.sls").write_text("base:\n  '*':\n    - rotation\n")
    (root / "rotation.sls").write_text(json.dumps({"redis": {"password": NEW_PASSWORD}}))
    return root


@pytest.fixture(scope="module")
def loaded(redis_servers, make_loaders, pillar_root, tmp_path_factory):  # noqa: F811
    """Each node's redis_replication module and state, loaded once."""
    result = []
    for server in redis_servers:
        auth_file = tmp_path_factory.mktemp(server.name) / "auth.conf"
        loaders = make_loaders(
            id=server.name, pillar_roots={"base": [str(pillar_root)]},
            redis_replication={"host": "127.0.0.1", "port": server.port,
                               "password_file": str(auth_file),
                               "role_file": str(server.role_file)})
        result.append((loaders.modules.redis_replication, loaders.states.redis_replication,
                       auth_file))
    return result


@pytest.fixture
def pair(redis_pair, loaded):  # noqa: F811
    """(master, replica), each with its auth file holding the old password."""
    nodes = tuple(Node(server, *parts) for server, parts in zip(redis_pair, loaded))
    for node in nodes:
        node.write_auth_file(node.server.password)
    return nodes


def authenticates(server, password):
    try:
        return redis.Redis(port=server.port, password=password, socket_timeout=2).ping()
    except redis.AuthenticationError:
        return False


def replica_connection(master, password=None):
    """The id of the replica's connection on the master: the same id means
    the link was never re-established."""
    client = redis.Redis(port=master.server.port, password=password or master.server.password,
                         decode_responses=True)
    replicas = client.client_list(_type="replica")
    assert len(replicas) == 1
    return replicas[0]["id"]


def test_a_new_password_is_accepted_beside_the_old_without_a_restart(pair):
    master, replica = pair
    link = replica_connection(master)
    client_before = master.server.client()
    client_before.set("before", "1")
    pids = [node.server.client().info("server")["process_id"] for node in pair]

    for node in pair:  # the primary first, as orch.rotate orders it
        outcome = node.module.accept_password("redis:password")
        assert outcome["running"] is True
        assert len(outcome["changes"]) == 2, outcome

    for node in pair:
        assert authenticates(node.server, NEW_PASSWORD)
        assert authenticates(node.server, node.server.password)
    assert [node.server.client().info("server")["process_id"] for node in pair] == pids
    assert replica_connection(master) == link
    assert client_before.get("before") == "1"  # a connection already open keeps working
    # Again: nothing left to do.
    assert master.module.accept_password("redis:password")["changes"] == []


def test_test_mode_says_what_would_change_and_changes_nothing(pair):
    master = pair[0]
    result = master.states.password_accepted("redis:password", test=True)
    assert result.result is None and "would take the new password" in result.comment
    assert not authenticates(master.server, NEW_PASSWORD)
    assert NEW_PASSWORD not in json.dumps(result.raw)


def test_the_state_reports_a_change_without_the_password_then_none(pair):
    master = pair[0]
    first = master.states.password_accepted("redis:password")
    assert first.result is True and first.changes
    assert NEW_PASSWORD not in json.dumps(first.raw)
    second = master.states.password_accepted("redis:password")
    assert second.result is True and not second.changes


def test_retiring_refuses_the_old_password_and_the_replica_reconnects_with_the_new(pair):
    master, replica = pair
    writer = master.server.client()
    writer.set("before", "1")  # connected and authenticated with the old password
    for node in pair:
        node.module.accept_password("redis:password")
        node.write_auth_file(NEW_PASSWORD)
    for node in pair:
        assert node.module.retire_passwords() == {"retired": 1}
        assert node.module.retire_passwords() == {"retired": 0}
    for node in pair:
        assert not authenticates(node.server, node.server.password)
        assert authenticates(node.server, NEW_PASSWORD)
    writer.set("after", "2")  # authenticated before: still served

    # The replica's next connection to its master authenticates with the new password.
    def new_client(node):
        return redis.Redis(port=node.server.port, password=NEW_PASSWORD, decode_responses=True)

    link = replica_connection(master, NEW_PASSWORD)
    new_client(master).client_kill_filter(_type="replica")
    new_client(master).set("reconnected", "3")  # reaches the replica only over a new link
    wait_until(lambda: new_client(replica).get("reconnected") == "3", 10,
               "the write, replicated over a new link")
    assert replica_connection(master, NEW_PASSWORD) != link


def test_a_server_that_refuses_every_password_is_an_error_naming_the_fix(pair):
    master = pair[0]
    master.write_auth_file("neither-old-nor-new")
    with pytest.raises(CommandExecutionError, match="refused the new password, the one in .*auth.conf and none"):
        master.module.accept_password("redis:password")


def test_a_server_that_is_not_running_takes_the_password_from_its_file(pair):
    master, replica = pair
    replica.server.stop()
    assert replica.module.accept_password("redis:password") == {"running": False, "changes": []}

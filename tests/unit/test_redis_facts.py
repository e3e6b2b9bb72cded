"""ha_core.redis_facts: requirepass from a Redis config file, the role file's
content and the role it gives, INFO replication and what it says (status,
lag, switch offset, this node among the master's replicas); and the
redis_replication module's I/O around them (the role file on disk, node
arguments, loading)."""

import os

import pytest
from salt.exceptions import SaltInvocationError

from _modules import redis_replication as rr
from ha_core import addresses, errors, redis_facts

# INFO replication as redis-server 7.0 sends it.
MASTER_INFO = (
    "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
    "slave0:ip=10.11.12.20,port=6379,state=online,offset=1200,lag=1\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:ddd18983822b33201d06d64e72770e2380ada401\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:1250\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n"
)
REPLICA_INFO = (
    "# Replication\r\nrole:slave\r\nmaster_host:10.11.12.10\r\nmaster_port:6379\r\n"
    "master_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaster_sync_in_progress:0\r\n"
    "slave_read_repl_offset:1200\r\nslave_repl_offset:1200\r\nslave_priority:100\r\n"
    "connected_slaves:0\r\nmaster_failover_state:no-failover\r\n"
    "master_replid:ddd18983822b33201d06d64e72770e2380ada401\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:1200\r\nsecond_repl_offset:-1\r\n"
)
REPLICA_LINK_DOWN_INFO = REPLICA_INFO.replace(
    "master_link_status:up", "master_link_status:down"
).replace("slave_priority", "master_link_down_since_seconds:42\r\nslave_priority")
PROMOTED_INFO = (
    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
    "master_replid:1111111111111111111111111111111111111111\r\n"
    "master_replid2:ddd18983822b33201d06d64e72770e2380ada401\r\n"
    "master_repl_offset:1300\r\nsecond_repl_offset:1201\r\n"
)


@pytest.mark.parametrize(
    "line, args",
    [
        ("requirepass s3cret", ["requirepass", "s3cret"]),
        ('requirepass "two words"', ["requirepass", "two words"]),
        (r'requirepass "q\"uote\\back"', ["requirepass", 'q"uote\\back']),
        (r'requirepass "\x41\n\xc3\xa9"', ["requirepass", "A\né"]),
        (r"requirepass 'it\'s'", ["requirepass", "it's"]),
        (r"requirepass 'no\nescape'", ["requirepass", r"no\nescape"]),
        (r"requirepass back\slash", ["requirepass", r"back\slash"]),
        ('requirepass ""', ["requirepass", ""]),
        ("  save  3600 1  ", ["save", "3600", "1"]),
    ],
)
def test_config_lines_are_split_as_redis_server_splits_them(line, args):
    assert redis_facts.split_config_line(line) == args


@pytest.mark.parametrize("line", ['requirepass "open', "requirepass 'open", 'requirepass "a"b'])
def test_a_malformed_config_line_is_refused(line):
    with pytest.raises(errors.InvalidInput):
        redis_facts.split_config_line(line)


def test_config_directives_skip_blank_lines_and_comments_and_keep_line_numbers():
    text = "# comment\n\n  port 6379\nrequirepass x\n"
    assert list(redis_facts.config_directives(text, "f")) == [
        (3, ["port", "6379"]), (4, ["requirepass", "x"])]


def test_requirepass_is_the_last_one_in_the_file():
    text = "# requirepass commented\nport 6379\nrequirepass \"old\"\n\nrequirepass 'new one'\n"
    assert redis_facts.requirepass_from_config(text, "/etc/redis/airflow.conf") == "new one"


def test_requirepass_with_more_than_one_argument_is_an_error():
    with pytest.raises(errors.InvalidInput, match="line 1 of f must have one argument"):
        redis_facts.requirepass_from_config("requirepass new one\n", "f")


def test_a_config_file_without_requirepass_is_an_error_naming_the_file():
    with pytest.raises(errors.InvalidInput, match="/etc/redis/airflow.conf sets no requirepass"):
        redis_facts.requirepass_from_config("port 6379\n# requirepass x\n",
                                            "/etc/redis/airflow.conf")


def test_an_unparsable_config_line_is_named_by_number_without_its_content():
    with pytest.raises(errors.InvalidInput) as error:
        redis_facts.requirepass_from_config('port 6379\nrequirepass "hunter2\n',
                                            "/etc/redis/airflow.conf")
    assert "line 2 of /etc/redis/airflow.conf" in str(error.value)
    assert "hunter2" not in str(error.value)


MASTER_ROLE = ("master", None)
REPLICA_ROLE = ("replica", ("10.11.12.10", 6379))


def test_the_role_file_of_a_master_is_a_header_without_replicaof():
    content = redis_facts.role_file_content(MASTER_ROLE)
    assert content.startswith("# ") and "written by the redis_replication" in content
    assert all(line.startswith("#") for line in content.splitlines())
    assert redis_facts.role_from_role_file(content, "f") == MASTER_ROLE


def test_the_role_file_of_a_replica_ends_with_its_replicaof():
    content = redis_facts.role_file_content(REPLICA_ROLE)
    assert content == redis_facts.role_file_content(MASTER_ROLE) + "replicaof 10.11.12.10 6379\n"
    assert redis_facts.role_from_role_file(content, "f") == REPLICA_ROLE


@pytest.mark.parametrize("host", ["", "two words", 'q"uote', "back\\slash"])
def test_a_host_that_would_need_quoting_is_not_written_to_the_role_file(host):
    with pytest.raises(errors.InvalidInput, match="Cannot write the master host"):
        redis_facts.role_file_content(("replica", (host, 6379)))


@pytest.mark.parametrize(
    "text, role",
    [
        # As Salt writes it initially.
        ("# The role of this Redis node.\nreplicaof 10.11.12.10 6379\n", REPLICA_ROLE),
        ("# The role of this Redis node.\n", MASTER_ROLE),
        ("", MASTER_ROLE),
        ("  SLAVEOF \"10.11.12.10\" 6379  \n", REPLICA_ROLE),
        ("replicaof 10.11.12.30 6380\nreplicaof 10.11.12.10 6379\n", REPLICA_ROLE),
        ("replicaof 10.11.12.10 6379\nreplicaof no one\n", MASTER_ROLE),
        ("appendonly yes\nreplicaof 10.11.12.10 6379\n", REPLICA_ROLE),
    ],
)
def test_the_role_of_a_role_file_is_its_last_replicaof(text, role):
    assert redis_facts.role_from_role_file(text, "f") == role


@pytest.mark.parametrize(
    "text, error",
    [
        ("replicaof 10.11.12.10\n", "replicaof on line 1 of f must have two arguments"),
        ("#\nreplicaof 10.11.12.10 6379 x\n", "line 2 of f must have two arguments"),
        ("slaveof 10.11.12.10 redis\n", "slaveof on line 1 of f has 'redis' as its port"),
        ("replicaof 10.11.12.10 0\n", "has '0' as its port"),
        ('replicaof "10.11.12.10 6379\n', "Cannot parse line 1 of f: unbalanced quotes"),
    ],
)
def test_a_role_file_redis_server_would_not_load_is_an_error(text, error):
    with pytest.raises(errors.InvalidInput, match=error):
        redis_facts.role_from_role_file(text, "f")


def test_a_new_role_file_is_written_with_mode_0644(tmp_path):
    path = tmp_path / "replication.conf"
    assert redis_facts.save_role_file(str(path), REPLICA_ROLE) is True
    assert path.read_text() == redis_facts.role_file_content(REPLICA_ROLE)
    assert path.stat().st_mode & 0o7777 == 0o644
    assert os.listdir(tmp_path) == ["replication.conf"]  # no temporary file left


def test_a_role_file_that_already_says_so_is_left_alone(tmp_path):
    path = tmp_path / "replication.conf"
    path.write_text(redis_facts.role_file_content(MASTER_ROLE))
    before = path.stat()
    assert redis_facts.save_role_file(str(path), MASTER_ROLE) is False
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_role_file_is_replaced_keeping_its_owner_group_and_mode(tmp_path):
    path = tmp_path / "replication.conf"
    path.write_text("# The role of this Redis node.\n")
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    before = path.stat()
    assert redis_facts.save_role_file(str(path), REPLICA_ROLE) is True
    after = path.stat()
    assert after.st_ino != before.st_ino  # replaced, not written in place
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid, before.st_gid, before.st_mode)
    assert redis_facts.role_from_role_file(path.read_text(), str(path)) == REPLICA_ROLE
    assert sorted(os.listdir(tmp_path)) == ["replication.conf"]


def test_the_runtime_role_is_read_from_info_replication():
    assert redis_facts.runtime_role(redis_facts.parse_replication_info(MASTER_INFO)) == MASTER_ROLE
    assert redis_facts.runtime_role(
        redis_facts.parse_replication_info(REPLICA_LINK_DOWN_INFO)) == REPLICA_ROLE


def test_status_of_a_master_lists_its_replicas_with_their_lag():
    status = redis_facts.status_from_info(redis_facts.parse_replication_info(MASTER_INFO))
    assert status == {
        "role": "master",
        "master_replid": "ddd18983822b33201d06d64e72770e2380ada401",
        "master_repl_offset": 1250,
        "connected_replicas": [
            {"ip": "10.11.12.20", "port": 6379, "state": "online", "offset": 1200,
             "lag_bytes": 50, "lag_seconds": 1},
        ],
    }


def test_status_of_a_replica_measures_its_lag_against_its_master():
    master = redis_facts.parse_replication_info(MASTER_INFO)
    status = redis_facts.status_from_info(redis_facts.parse_replication_info(REPLICA_INFO), master)
    assert status == {
        "role": "replica",
        "master_host": "10.11.12.10",
        "master_port": 6379,
        "master_link_status": "up",
        "master_link_down_seconds": None,
        "master_replid": "ddd18983822b33201d06d64e72770e2380ada401",
        "master_repl_offset": 1250,
        "replica_repl_offset": 1200,
        "lag_bytes": 50,
    }


def test_a_replica_whose_master_does_not_answer_has_no_known_lag():
    status = redis_facts.status_from_info(
        redis_facts.parse_replication_info(REPLICA_LINK_DOWN_INFO))
    assert (status["master_link_status"], status["master_link_down_seconds"]) == ("down", 42)
    assert (status["master_repl_offset"], status["lag_bytes"]) == (None, None)
    assert status["replica_repl_offset"] == 1200


def test_lag_is_unknown_across_different_replication_histories():
    other_master = redis_facts.parse_replication_info(PROMOTED_INFO)
    replica = redis_facts.parse_replication_info(REPLICA_INFO)
    assert redis_facts.replica_lag_bytes(other_master, replica) is None


def test_a_caught_up_replica_has_no_lag():
    master = redis_facts.parse_replication_info(
        MASTER_INFO.replace("master_repl_offset:1250", "master_repl_offset:1200"))
    replica = redis_facts.parse_replication_info(REPLICA_INFO)
    assert redis_facts.replica_lag_bytes(master, replica) == 0


def test_the_switch_offset_of_a_promoted_node_is_the_last_one_it_replicated():
    assert redis_facts.switch_offset(redis_facts.parse_replication_info(PROMOTED_INFO)) == 1200
    # Never switched:
    assert redis_facts.switch_offset(redis_facts.parse_replication_info(MASTER_INFO)) == 1250


def test_a_role_summary_says_where_a_master_was_or_what_a_replica_followed():
    assert redis_facts.role_summary(redis_facts.parse_replication_info(MASTER_INFO)) == (
        "a master at offset 1250")
    assert redis_facts.role_summary(redis_facts.parse_replication_info(REPLICA_INFO)) == (
        "a replica of 10.11.12.10:6379")


REPLICAS = [
    {"ip": ip, "port": 6379, "state": "online", "offset": 1, "lag_bytes": 0, "lag_seconds": 0}
    for ip in ("10.11.12.20", "10.11.12.30")
]


def test_this_node_is_the_replica_entry_with_its_announced_address_and_port():
    assert redis_facts.find_replica_entry(REPLICAS, "10.11.12.30", 6379) is REPLICAS[1]
    assert redis_facts.find_replica_entry(REPLICAS, "10.11.12.30", 6380) is None
    assert redis_facts.find_replica_entry(REPLICAS, "127.0.0.1", 6379) is None


def test_a_replica_counts_as_online_only_in_state_online():
    replicas = [{"ip": "10.0.0.2", "port": 6379, "state": "wait_bgsave"},
                {"ip": "10.0.0.3", "port": 6379, "state": "online"}]
    assert not redis_facts.replica_online(replicas, "10.0.0.2", 6379)
    assert redis_facts.replica_online(replicas, "10.0.0.3", 6379)
    assert not redis_facts.replica_online(replicas, "10.0.0.3", 6380)


def test_a_node_follows_a_master_only_with_its_link_up():
    replica = redis_facts.parse_replication_info(REPLICA_INFO)
    assert redis_facts.follows(replica, "10.11.12.10", 6379)
    assert not redis_facts.follows(replica, "10.11.12.10", 6380)
    assert not redis_facts.follows(replica, "10.11.12.20", 6379)
    link_down = redis_facts.parse_replication_info(REPLICA_LINK_DOWN_INFO)
    assert not redis_facts.follows(link_down, "10.11.12.10", 6379)
    assert not redis_facts.follows(
        redis_facts.parse_replication_info(MASTER_INFO), "10.11.12.10", 6379)


# --- The redis_replication module's I/O around these facts ---------------------


def test_a_role_file_that_cannot_be_written_says_how_to_recover(tmp_path):
    path = tmp_path / "missing-directory" / "replication.conf"
    with pytest.raises(errors.OperationFailed) as error:
        rr._save_role_file(str(path), MASTER_ROLE)
    message = str(error.value)
    assert f"Cannot write the role file {path}" in message
    assert "is a master now but would not be after a restart" in message
    assert "redis_replication.save_role" in message


def test_the_role_file_agrees_only_when_it_gives_the_runtime_role(tmp_path, caplog):
    path = tmp_path / "replication.conf"
    assert rr._role_file_agrees(str(path), MASTER_ROLE) is False  # missing
    assert f"Cannot read the role file {path}" in caplog.text
    path.write_text("# hand-written\nreplicaof 10.11.12.10 6379\n")
    assert rr._role_file_agrees(str(path), REPLICA_ROLE) is True
    assert rr._role_file_agrees(str(path), ("replica", ("10.11.12.10", 6380))) is False
    assert rr._role_file_agrees(str(path), MASTER_ROLE) is False
    path.write_text("replicaof 10.11.12.10\n")
    assert rr._role_file_agrees(str(path), REPLICA_ROLE) is False  # unparsable
    assert "must have two arguments" in caplog.text


@pytest.mark.parametrize(
    "node, expected",
    [("10.11.12.20", ("10.11.12.20", 6380)), ("10.11.12.20:6379", ("10.11.12.20", 6379)),
     ("redis-b.example:7000", ("redis-b.example", 7000))],
)
def test_a_node_is_host_or_host_and_port(node, expected):
    assert addresses.parse(node, 6380) == expected


@pytest.mark.parametrize(
    "node", ["", ":6379", "host:", "host:port", "host:0", "host:65536", "a:1:2", "a b:6379",
             '"host":6379'])
def test_a_malformed_node_is_refused(node, monkeypatch):
    with pytest.raises(errors.InvalidInput, match="HOST or HOST:PORT"):
        addresses.parse(node, 6379)
    # The module reports it to Salt as a bad argument, before asking any server.
    monkeypatch.setattr(rr, "__salt__", {"config.get": lambda key, default: {}}, raising=False)
    with pytest.raises(SaltInvocationError, match="HOST or HOST:PORT"):
        rr.replicate_from(node)


def test_the_module_does_not_load_without_redis_py_and_says_why(monkeypatch):
    monkeypatch.setattr(rr, "HAS_REDIS", False)
    loaded, reason = rr.__virtual__()
    assert loaded is False and "redis Python library" in reason

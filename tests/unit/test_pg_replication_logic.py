"""pg_replication's parsing and decisions, which need no server."""

import pytest
from salt.exceptions import CommandExecutionError

from _modules import pg_replication as pgr

MiB = 2**20


@pytest.mark.parametrize("text, position", [
    ("0/0", 0),
    ("0/3000148", 0x3000148),
    ("1A/FF", (0x1A << 32) | 0xFF),
    ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
])
def test_lsn_text_and_position_convert_both_ways(text, position):
    assert pgr._parse_lsn(text) == position
    assert pgr._format_lsn(position) == text


@pytest.mark.parametrize("text", ["", "3000148", "0/", "0/xyz", "1/2/3"])
def test_a_malformed_lsn_is_refused(text):
    with pytest.raises(ValueError, match="not an LSN"):
        pgr._parse_lsn(text)


def test_pg_controldata_output_becomes_labels_and_values():
    output = (
        "pg_control version number:            1300\n"
        "Database system identifier:           7311650800973885350\n"
        "Database cluster state:               shut down in recovery\n"
        "pg_control last modified:             Tue Nov 24 08:25:36 2026\n"
        "Latest checkpoint location:           0/3026880\n"
        "Latest checkpoint's TimeLineID:       2\n"
    )
    values = pgr._parse_controldata(output)
    assert values["Database cluster state"] == "shut down in recovery"
    assert values["pg_control last modified"] == "Tue Nov 24 08:25:36 2026"
    assert values["Latest checkpoint's TimeLineID"] == "2"
    assert values["Database system identifier"] == "7311650800973885350"


def test_a_wal_file_name_gives_its_timeline_and_start():
    assert pgr._wal_file_start("00000002000000010000000A", 16 * MiB) == (
        2, (1 << 32) + 10 * 16 * MiB)
    assert pgr._wal_file_start("000000010000000000000003", 64 * MiB) == (1, 3 * 64 * MiB)


def test_a_timeline_history_lists_where_each_timeline_was_left():
    history = (
        "1\t0/30268F8\tno recovery target specified\n"
        "\n"
        "# comment\n"
        "3\t0/5000000\tbefore 2026-11-24 08:00:00+00\n"
    )
    assert pgr._parse_timeline_history(history) == [(1, 0x30268F8), (3, 0x5000000)]
    assert pgr._parse_timeline_history("") == []


@pytest.mark.parametrize("title, parsed", [
    ("postgres: walreceiver streaming 0/3000148", {"status": "streaming", "lsn": "0/3000148"}),
    ("postgres: 15/main: walreceiver streaming 1/A0", {"status": "streaming", "lsn": "1/A0"}),
    ("postgres: pg-b: walreceiver restarting at 0/3000000",
     {"status": "restarting", "lsn": "0/3000000"}),
    ("postgres: pg-b: walreceiver", {"status": "started", "lsn": None}),
    ("postgres: pg-a: walsender replicator 127.0.0.1(60892) streaming 0/3000148", None),
    ("postgres: pg-b: startup recovering 000000010000000000000003", None),
])
def test_a_wal_receiver_title_tells_its_status_and_position(title, parsed):
    assert pgr._parse_walreceiver_title(title) == parsed


@pytest.mark.parametrize("title, parsed", [
    ("postgres: startup recovering 000000010000000000000003",
     {"activity": "recovering", "wal_file": "000000010000000000000003"}),
    ("postgres: 15/main: startup waiting for 00000002000000000000000A",
     {"activity": "waiting for", "wal_file": "00000002000000000000000A"}),
    ("postgres: pg-b: startup", {"activity": None, "wal_file": None}),
    ("postgres: pg-b: checkpointer", None),
    ("postgres: pg-b: walreceiver streaming 0/3000148", None),
])
def test_a_startup_title_tells_what_recovery_reads(title, parsed):
    assert pgr._parse_startup_title(title) == parsed


def test_the_last_record_read_by_pg_waldump_comes_from_its_closing_error():
    stderr = ("pg_waldump: error: error in WAL record at 0/1500718: invalid record length "
              "at 0/1500790: wanted 24, got 0\n")
    assert pgr._parse_waldump_last_record(stderr) == "0/1500718"
    missing = 'pg_waldump: error: could not find file "000000010000000000000004"\n'
    assert pgr._parse_waldump_last_record(missing) is None


@pytest.mark.parametrize("running, cluster_state, standby_signal, role", [
    (False, "in production", False, "stopped"),  # crashed: the control file says so
    (False, "shut down in recovery", True, "stopped"),
    (True, "in production", True, "primary"),  # e.g. while being fenced
    (True, "in archive recovery", False, "standby"),
    (True, "shut down", True, "standby"),  # just started, recovery not begun yet
    (True, "in crash recovery", False, "primary"),
])
def test_a_server_role_comes_from_its_control_file_then_its_signal_file(
        running, cluster_state, standby_signal, role):
    assert pgr._server_role(running, cluster_state, standby_signal) == role


def test_a_slot_name_is_the_node_name_in_lower_case_with_underscores():
    assert pgr._slot_name("Airflow-Server1.lab") == "airflow_server1_lab"
    assert pgr._slot_name("pg_b") == "pg_b"
    assert len(pgr._slot_name("n" * 80)) == 63


@pytest.mark.parametrize("node, address", [
    ("db1", ("db1", 5432)),
    ("db1:6543", ("db1", 6543)),
    ("10.11.12.20", ("10.11.12.20", 5432)),
    ("[fd00::20]:6543", ("fd00::20", 6543)),
    ("[fd00::20]", ("fd00::20", 5432)),
])
def test_a_node_address_is_a_host_and_an_optional_port(node, address):
    assert pgr._parse_node_address(node, 5432) == address


@pytest.mark.parametrize("node", ["", "db1:", "db1:port", "fd00::20", "db 1"])
def test_a_malformed_node_address_is_refused(node):
    with pytest.raises(CommandExecutionError, match="give HOST or HOST:PORT"):
        pgr._parse_node_address(node, 5432)


def test_a_connection_string_quotes_what_needs_it_and_reads_back():
    params = {"host": "10.0.0.1", "port": 5432, "user": "replicator",
              "application_name": "pg-a", "passfile": "/var/lib/it's here\\x", "sslmode": None}
    conninfo = pgr._format_conninfo(params)
    assert conninfo.startswith("host=10.0.0.1 port=5432 user=replicator application_name=pg-a ")
    assert "sslmode" not in conninfo
    del params["sslmode"]
    assert pgr._parse_conninfo(conninfo) == {key: str(value) for key, value in params.items()}


def test_standby_settings_are_read_as_pg_basebackup_writes_them():
    auto_conf = (
        "# Do not edit this file manually!\n"
        "primary_conninfo = 'user=postgres host=old port=1'\n"
        "primary_conninfo = 'user=replicator passfile=''/tmp/a b/passfile'' "
        "channel_binding=prefer host=127.0.0.1 port=5433 sslmode=prefer'\n"
        "primary_slot_name = 'pg_b'\n"
    )
    conninfo = pgr._conf_value(auto_conf, "primary_conninfo")  # the last one counts
    assert pgr._parse_conninfo(conninfo) == {
        "user": "replicator", "passfile": "/tmp/a b/passfile", "channel_binding": "prefer",
        "host": "127.0.0.1", "port": "5433", "sslmode": "prefer"}
    assert pgr._conf_value(auto_conf, "primary_slot_name") == "pg_b"
    assert pgr._conf_value(auto_conf, "primary_slot") is None
    assert pgr._conf_value("port = 5433 # comment\n", "port") == "5433"


def test_setting_conf_values_replaces_their_lines_and_keeps_the_others():
    auto_conf = (
        "# Do not edit this file manually!\n"
        "primary_conninfo = 'host=old'\n"
        "primary_slot_name='old'\n"
        "work_mem = '8MB'\n"
    )
    text = pgr._set_conf_values(auto_conf, {
        "primary_conninfo": "host=new passfile='/it''s'", "primary_slot_name": "pg_a"})
    assert text.splitlines() == [
        "# Do not edit this file manually!",
        "work_mem = '8MB'",
        "primary_conninfo = 'host=new passfile=''/it''''s'''",
        "primary_slot_name = 'pg_a'",
    ]
    assert pgr._conf_value(text, "primary_conninfo") == "host=new passfile='/it''s'"


def test_only_a_running_standby_can_be_promoted_even_by_force():
    for role in ("primary", "stopped"):
        assert pgr._promotion_blockers(role, False, True, 0, force=True) == [
            f"it is {role}, not a running standby"]


def test_a_healthy_standby_may_be_promoted():
    assert pgr._promotion_blockers("standby", False, True, None) == []
    assert pgr._promotion_blockers("standby", False, False, 10, max_lag_bytes=MiB) == []


def test_a_fenced_standby_is_promoted_only_by_force():
    [reason] = pgr._promotion_blockers("standby", True, True, 0)
    assert "fenced" in reason
    assert pgr._promotion_blockers("standby", True, True, 0, force=True) == []


def test_lag_blocks_promotion_only_when_the_primary_is_unreachable():
    [reason] = pgr._promotion_blockers("standby", False, False, 2 * MiB, max_lag_bytes=MiB)
    assert "unreachable and the standby is 2097152 bytes of WAL behind (more than 1048576)" in (
        reason)
    [reason] = pgr._promotion_blockers("standby", False, False, None, max_lag_bytes=MiB)
    assert "lag is unknown" in reason
    assert pgr._promotion_blockers("standby", False, True, 2 * MiB, max_lag_bytes=MiB) == []
    assert pgr._promotion_blockers("standby", False, False, 2 * MiB) == []  # no limit given
    assert pgr._promotion_blockers("standby", False, False, 2 * MiB, MiB, force=True) == []


# The new primary left timeline 1 at 0/30268F8 and is at 0/5000000 on timeline 2.
PROMOTED = [(1, 0x30268F8), (2, 0x5000000)]


@pytest.mark.parametrize("local_timeline, local_last_lsn, rewind_possible, method", [
    # Shut down cleanly before the switch (a planned switchover): its WAL is
    # all in the new primary's history.
    (1, 0x3026880, True, "none"),
    (1, 0x3026880, False, "none"),
    # Wrote on timeline 1 past the switch: diverged.
    (1, 0x30268F8, True, "rewind"),
    (1, 0x4000000, True, "rewind"),
    (1, 0x4000000, False, "basebackup"),
    # Crashed or was in recovery: where its WAL ends is unknown.
    (1, None, True, "rewind"),
    (1, None, False, "basebackup"),
    # A standby of the current timeline that is behind.
    (2, 0x4000000, False, "none"),
    (2, 0x6000000, True, "rewind"),
    # A sibling timeline (promoted elsewhere too): not in the primary's history.
    (3, 0x3100000, True, "rewind"),
])
def test_the_rejoin_method_follows_the_timelines(
        local_timeline, local_last_lsn, rewind_possible, method):
    assert pgr._choose_rejoin_method(
        same_cluster=True, local_timeline=local_timeline, local_last_lsn=local_last_lsn,
        primary_timelines=PROMOTED, rewind_possible=rewind_possible) == method


def test_a_node_of_another_cluster_rejoins_by_base_backup():
    assert pgr._choose_rejoin_method(
        same_cluster=False, local_timeline=1, local_last_lsn=0x100, primary_timelines=PROMOTED,
        rewind_possible=True) == "basebackup"


def test_the_module_does_not_load_without_the_server_programs(monkeypatch, tmp_path):
    settings = {"bin_dir": str(tmp_path)}  # no PostgreSQL programs there
    monkeypatch.setattr(pgr, "__salt__", {"config.get": lambda key, default: settings},
                        raising=False)
    monkeypatch.setattr(pgr, "__grains__", {"id": "pg-a"}, raising=False)
    loaded, reason = pgr.__virtual__()
    assert loaded is False
    assert reason == (f"pg_replication: pg_controldata not found in {tmp_path}; install the "
                      "PostgreSQL server package or set pg_replication:bin_dir")

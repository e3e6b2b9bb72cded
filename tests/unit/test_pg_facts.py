"""ha_core.pg_facts: what PostgreSQL says, parsed (LSNs, WAL files,
timelines, pg_controldata, process titles, status queries, conninfo,
settings, verifiers)."""

import base64
import hashlib
import hmac
import json

import pytest

from ha_core import errors, pg_facts

MiB = 2**20


# --- LSNs, WAL files, timelines ------------------------------------------------------


@pytest.mark.parametrize("text, position", [
    ("0/0", 0),
    ("0/3000148", 0x3000148),
    ("1A/FF", (0x1A << 32) | 0xFF),
    ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
])
def test_lsn_text_and_position_convert_both_ways(text, position):
    assert pg_facts.parse_lsn(text) == position
    assert pg_facts.format_lsn(position) == text


@pytest.mark.parametrize("text", ["", "3000148", "0/", "0/xyz", "1/2/3"])
def test_a_malformed_lsn_is_refused(text):
    with pytest.raises(ValueError, match="not an LSN"):
        pg_facts.parse_lsn(text)
    with pytest.raises(errors.InvalidInput):
        pg_facts.parse_lsn(text)


def test_lag_is_what_the_primary_has_that_the_standby_has_not_received():
    assert pg_facts.lag_bytes("0/3000100", "0/3000000") == 0x100
    assert pg_facts.lag_bytes("0/3000000", "0/3000100") == 0  # the primary's LSN was older
    assert pg_facts.lag_bytes(None, "0/3000000") is None
    assert pg_facts.lag_bytes("0/3000000", None) is None


def test_a_wal_file_name_gives_its_timeline_and_start():
    assert pg_facts.wal_file_start("00000002000000010000000A", 16 * MiB) == (
        2, (1 << 32) + 10 * 16 * MiB)
    assert pg_facts.wal_file_start("000000010000000000000003", 64 * MiB) == (1, 3 * 64 * MiB)


def test_a_timeline_history_lists_where_each_timeline_was_left():
    history = (
        "1\t0/30268F8\tno recovery target specified\n"
        "\n"
        "# comment\n"
        "3\t0/5000000\tbefore 2026-11-24 08:00:00+00\n"
    )
    assert pg_facts.parse_timeline_history(history) == [(1, 0x30268F8), (3, 0x5000000)]
    assert pg_facts.parse_timeline_history("") == []


def test_a_primary_s_timelines_are_its_history_then_where_it_is_now():
    identity = pg_facts.parse_identify_system("7311650800973885350|2|0/5000000|")
    assert identity == {"system_identifier": "7311650800973885350", "timeline": 2,
                        "flush_lsn": 0x5000000}
    reply = "00000002.history|1\t0/30268F8\tno recovery target specified\n"
    assert pg_facts.primary_timelines(identity, reply) == [(1, 0x30268F8), (2, 0x5000000)]
    assert pg_facts.primary_timelines({**identity, "timeline": 1}) == [(1, 0x5000000)]


# --- Programs' output and process titles ---------------------------------------------


def test_pg_controldata_output_becomes_labels_and_values():
    output = (
        "pg_control version number:            1300\n"
        "Database system identifier:           7311650800973885350\n"
        "Database cluster state:               shut down in recovery\n"
        "pg_control last modified:             Tue Nov 24 08:25:36 2026\n"
        "Latest checkpoint location:           0/3026880\n"
        "Latest checkpoint's TimeLineID:       2\n"
    )
    values = pg_facts.parse_controldata(output)
    assert values["Database cluster state"] == "shut down in recovery"
    assert values["pg_control last modified"] == "Tue Nov 24 08:25:36 2026"
    assert values["Latest checkpoint's TimeLineID"] == "2"
    assert values["Database system identifier"] == "7311650800973885350"


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
    assert pg_facts.parse_walreceiver_title(title) == parsed


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
    assert pg_facts.parse_startup_title(title) == parsed


def test_the_last_record_read_by_pg_waldump_comes_from_its_closing_error():
    stderr = ("pg_waldump: error: error in WAL record at 0/1500718: invalid record length "
              "at 0/1500790: wanted 24, got 0\n")
    assert pg_facts.parse_waldump_last_record(stderr) == "0/1500718"
    missing = 'pg_waldump: error: could not find file "000000010000000000000004"\n'
    assert pg_facts.parse_waldump_last_record(missing) is None


@pytest.mark.parametrize("stderr, end", [
    # Zeros after the last record: the next one "begins" where it ends.
    ("pg_waldump: error: error in WAL record at 0/15261F0: invalid record length at "
     "0/1526268: wanted 24, got 0\n", 0x1526268),
    ("pg_waldump: error: error in WAL record at 0/3000028: record with incorrect prev-link "
     "0/1000028 at 0/3000060\n", 0x3000060),
    ("pg_waldump: error: error in WAL record at 0/3000028: incorrect resource manager data "
     "checksum in record at 0/3000060\n", 0x3000060),
    ("pg_waldump: error: error in WAL record at 0/3FFFF90: contrecord is requested by "
     "0/3FFFFD0\n", 0x3FFFFD0),
    # A page header it could not read (PostgreSQL 15, then 16's wording).
    ("pg_waldump: error: error in WAL record at 0/3FFFF90: invalid magic number 0000 in log "
     "segment 000000010000000000000004, offset 8192\n", 0x4002000),
    ("pg_waldump: error: error in WAL record at 0/3FFFF90: unexpected pageaddr 0/1000000 in "
     "WAL segment 000000010000000000000004, LSN 0/4000000, offset 0\n", 0x4000000),
    # The last record ended with a segment whose successor is not there.
    ('pg_waldump: error: could not find file "000000010000000000000004": No such file or '
     'directory\n', 0x4000000),
    ("pg_waldump: error: could not find a valid record after 0/3000000\n", None),
    ("pg_waldump: error: could not find any WAL file\n", None),
    ("", None),
])
def test_where_the_wal_ends_comes_from_pg_waldump_s_closing_error(stderr, end):
    assert pg_facts.parse_waldump_end(stderr, 16 * MiB) == end


@pytest.mark.parametrize("timeline, position, segment_size", [
    (1, 0x3026880, 16 * MiB),
    (2, (1 << 32) + 10 * 16 * MiB, 16 * MiB),
    (0x1F, (0xAB << 32) + 0xFFFFFFFF, 64 * MiB),
])
def test_a_wal_file_name_holds_the_position_it_was_named_for(timeline, position, segment_size):
    name = pg_facts.wal_file_name(timeline, position, segment_size)
    file_timeline, start = pg_facts.wal_file_start(name, segment_size)
    assert file_timeline == timeline and start <= position < start + segment_size
    assert pg_facts.wal_file_name(1, 0x3026880, 16 * MiB) == "000000010000000000000003"


def test_the_newest_wal_timeline_is_that_of_its_newest_segment_file():
    names = ["000000010000000000000003", "000000010000000000000004.partial",
             "00000003.history", "000000020000000000000004", "archive_status"]
    assert pg_facts.newest_wal_timeline(names) == 2
    assert pg_facts.newest_wal_timeline(["00000002.history", "archive_status"]) is None


def test_a_wal_range_is_written_as_two_lsns():
    assert pg_facts.format_lsn_range(0x30268F8, (1 << 32) + 0x10) == "0/30268F8-1/10"


STANDBY_CONTROL = {
    "Min recovery ending loc's timeline": "1",
    "Minimum recovery ending location": "0/3000000",
    "Bytes per WAL segment": str(16 * MiB),
}


def test_a_streaming_standby_s_progress_comes_from_its_process_titles():
    titles = ["postgres: pg-b: checkpointer",
              "postgres: pg-b: startup recovering 000000010000000000000004",
              "postgres: pg-b: walreceiver streaming 0/4000148"]
    asked = []
    progress = pg_facts.standby_progress(titles, STANDBY_CONTROL, lambda *a: asked.append(a))
    assert progress == {
        "wal_receiver": {"status": "streaming", "lsn": "0/4000148"},
        "received_lsn": "0/4000148",
        "replayed_lsn": "0/4000000",  # the start of the segment it replays
        "recovery": {"activity": "recovering", "wal_file": "000000010000000000000004"},
        "recovery_timelines": [1, 1],
    }
    assert asked == []


def test_without_a_wal_receiver_position_a_standby_has_received_its_last_local_record():
    titles = ["postgres: pg-b: startup recovering 000000020000000000000004"]
    progress = pg_facts.standby_progress(titles, STANDBY_CONTROL,
                                         lambda timeline, start: f"{timeline}:{start:X}")
    assert progress["received_lsn"] == "2:4000000"
    assert progress["recovery_timelines"] == [1, 2]
    progress = pg_facts.standby_progress(titles, STANDBY_CONTROL, lambda timeline, start: None)
    assert progress["received_lsn"] == "0/4000000"  # what it replays, at least


def test_a_primary_s_status_query_gives_its_timeline():
    output = json.dumps({"current_lsn": "0/3000148",
                         "current_wal_file": "000000020000000000000003",
                         "standbys": [], "slots": []})
    assert pg_facts.parse_primary_status(output) == {
        "current_lsn": "0/3000148", "standbys": [], "slots": [], "timeline": 2}


# --- Names, connection strings, settings, SQL, verifiers -----------------------------


def test_a_slot_name_is_the_node_name_in_lower_case_with_underscores():
    assert pg_facts.slot_name("Airflow-Server1.lab") == "airflow_server1_lab"
    assert pg_facts.slot_name("pg_b") == "pg_b"
    assert len(pg_facts.slot_name("n" * 80)) == 63


def test_a_connection_string_quotes_what_needs_it_and_reads_back():
    params = {"host": "10.0.0.1", "port": 5432, "user": "replicator",
              "application_name": "pg-a", "passfile": "/var/lib/it's here\\x", "sslmode": None}
    conninfo = pg_facts.format_conninfo(params)
    assert conninfo.startswith("host=10.0.0.1 port=5432 user=replicator application_name=pg-a ")
    assert "sslmode" not in conninfo
    del params["sslmode"]
    assert pg_facts.parse_conninfo(conninfo) == {key: str(value) for key, value in params.items()}


def test_configured_settings_override_the_defaults():
    settings = pg_facts.settings({"port": "5433", "data_dir": "/srv/pg"}, "airflow-server1")
    assert settings == {**pg_facts.DEFAULT_SETTINGS, "port": 5433, "data_dir": "/srv/pg",
                        "node_name": "airflow-server1"}
    assert pg_facts.settings(None, "m")["node_name"] == "m"
    assert pg_facts.settings({"node_name": "pg-a"}, "m")["node_name"] == "pg-a"


def test_standby_settings_are_read_as_pg_basebackup_writes_them():
    auto_conf = (
        "# Do not edit this file manually!\n"
        "primary_conninfo = 'user=postgres host=old port=1'\n"
        "primary_conninfo = 'user=replicator passfile=''/tmp/a b/passfile'' "
        "channel_binding=prefer host=127.0.0.1 port=5433 sslmode=prefer'\n"
        "primary_slot_name = 'pg_b'\n"
    )
    conninfo = pg_facts.conf_value(auto_conf, "primary_conninfo")  # the last one counts
    assert pg_facts.parse_conninfo(conninfo) == {
        "user": "replicator", "passfile": "/tmp/a b/passfile", "channel_binding": "prefer",
        "host": "127.0.0.1", "port": "5433", "sslmode": "prefer"}
    assert pg_facts.conf_value(auto_conf, "primary_slot_name") == "pg_b"
    assert pg_facts.conf_value(auto_conf, "primary_slot") is None
    assert pg_facts.conf_value("port = 5433 # comment\n", "port") == "5433"


def test_setting_conf_values_replaces_their_lines_and_keeps_the_others():
    auto_conf = (
        "# Do not edit this file manually!\n"
        "primary_conninfo = 'host=old'\n"
        "primary_slot_name='old'\n"
        "work_mem = '8MB'\n"
    )
    text = pg_facts.set_conf_values(auto_conf, {
        "primary_conninfo": "host=new passfile='/it''s'", "primary_slot_name": "pg_a"})
    assert text.splitlines() == [
        "# Do not edit this file manually!",
        "work_mem = '8MB'",
        "primary_conninfo = 'host=new passfile=''/it''''s'''",
        "primary_slot_name = 'pg_a'",
    ]
    assert pg_facts.conf_value(text, "primary_conninfo") == "host=new passfile='/it''s'"


def scram_verifier(password, salt=b"0123456789abcdef", iterations=4096):
    """A verifier as PostgreSQL stores it (RFC 5802 keys)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def test_scram_verifier_of_the_same_password_matches():
    assert pg_facts.scram_password_matches(scram_verifier("s3cret"), "s3cret")


@pytest.mark.parametrize("verifier", [
    scram_verifier("other"), None, "", "md5a1b2c3", "SCRAM-SHA-256$garbage",
])
def test_other_or_missing_verifiers_do_not_match(verifier):
    assert not pg_facts.scram_password_matches(verifier, "s3cret")

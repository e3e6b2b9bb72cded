"""ha_core.pg_datadir: the files of a data directory (fence marker, standby
configuration, timeline history, a replaced directory), the postmaster and
its children, and a node's status."""

import datetime
import json
import os

import pytest

from ha_core import errors, pg_datadir, pg_facts


def test_a_promoted_timeline_starts_where_its_history_file_says(tmp_path):
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "00000002.history").write_text("1\t0/30268F8\tno recovery target\n")
    (tmp_path / "pg_wal" / "000000010000000000000003").write_text("")
    assert pg_datadir.timeline_start(str(tmp_path), 2) == "0/30268F8"
    assert pg_datadir.history_timelines(str(tmp_path)) == [2]


def test_only_a_postgres_in_the_data_directory_is_its_postmaster(tmp_path):
    assert pg_datadir.postmaster_pid(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert pg_datadir.postmaster_pid(str(tmp_path)) is None  # this process is no postgres
    assert pg_datadir.child_titles(os.getppid())  # pytest is a child of its parent
    assert pg_datadir.child_titles(os.getpid()) == []


IDS = (os.getuid(), os.getgid())


def test_a_file_is_replaced_whole_and_private(tmp_path):
    path = tmp_path / "postgresql.auto.conf"
    path.write_text("old\n")
    pg_datadir.write_file(str(path), "new\n", *IDS)
    assert path.read_text() == "new\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [entry.name for entry in tmp_path.iterdir()] == ["postgresql.auto.conf"]
    assert pg_datadir.read_text(str(tmp_path / "missing")) is None


def test_fencing_writes_the_signal_file_and_keeps_the_first_marker(tmp_path):
    data_dir = str(tmp_path)
    assert pg_datadir.read_fence(data_dir) is None
    first = datetime.datetime(2026, 11, 24, 8, 0, tzinfo=datetime.timezone.utc)

    marker = pg_datadir.write_fence(data_dir, "failover to airflow-server2", *IDS, now=first)

    assert marker == {"fenced_at": "2026-11-24T08:00:00+00:00",
                      "reason": "failover to airflow-server2"}
    assert (tmp_path / pg_datadir.STANDBY_SIGNAL).read_text() == ""
    assert json.loads((tmp_path / pg_datadir.FENCE_MARKER).read_text()) == marker
    assert pg_datadir.write_fence(data_dir, "again", *IDS) == marker
    assert pg_datadir.read_fence(data_dir) == marker
    pg_datadir.remove_fence(data_dir)
    pg_datadir.remove_fence(data_dir)  # nothing left to remove
    assert pg_datadir.read_fence(data_dir) is None
    assert (tmp_path / pg_datadir.STANDBY_SIGNAL).exists()


def test_a_standby_follows_its_primary_conninfo_while_standby_signal_exists(tmp_path):
    data_dir = str(tmp_path)
    pg_datadir.write_fence(data_dir, "drill", *IDS)
    conninfo = pg_facts.format_conninfo({"host": "127.0.0.1", "port": 5433, "user": "replicator"})

    pg_datadir.configure_standby(data_dir, conninfo, "pg_a", *IDS)

    assert pg_datadir.read_fence(data_dir) is None
    assert pg_datadir.standby_of(data_dir) == {"host": "127.0.0.1", "port": 5433}
    auto_conf = (tmp_path / pg_datadir.AUTO_CONF).read_text()
    assert pg_facts.conf_value(auto_conf, "primary_slot_name") == "pg_a"
    (tmp_path / pg_datadir.STANDBY_SIGNAL).unlink()
    assert pg_datadir.standby_of(data_dir) is None


def test_a_replaced_data_directory_is_put_back_when_filling_it_fails(tmp_path):
    data_dir = tmp_path / "main"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("15\n")

    def fail(path):
        (tmp_path / "main" / "partial").write_text("")
        raise errors.OperationFailed("pg_basebackup failed")

    with pytest.raises(errors.OperationFailed):
        pg_datadir.replace_data_dir(str(data_dir), *IDS, fail)
    assert sorted(entry.name for entry in data_dir.iterdir()) == ["PG_VERSION"]

    pg_datadir.replace_data_dir(str(data_dir), *IDS, lambda path: (data_dir / "copy").write_text(""))
    assert sorted(entry.name for entry in data_dir.iterdir()) == ["copy"]
    assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["main"]


def test_a_replaced_data_directory_may_be_kept(tmp_path):
    data_dir = tmp_path / "main"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("15\n")
    keep = tmp_path / "main.discarded-20261124T080000Z"

    kept = pg_datadir.replace_data_dir(str(data_dir), *IDS,
                                       lambda path: (data_dir / "copy").write_text(""),
                                       keep=str(keep))

    assert kept == str(keep)
    assert sorted(entry.name for entry in data_dir.iterdir()) == ["copy"]
    assert sorted(entry.name for entry in keep.iterdir()) == ["PG_VERSION"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "main", "main.discarded-20261124T080000Z"]
    # Nothing is moved when the place to keep it is taken.
    with pytest.raises(errors.Refused, match="was to be kept, exists; nothing was changed"):
        pg_datadir.replace_data_dir(str(data_dir), *IDS, lambda path: None, keep=str(keep))
    assert sorted(entry.name for entry in data_dir.iterdir()) == ["copy"]
    assert pg_datadir.replace_data_dir(str(data_dir), *IDS, lambda path: None) is None


def test_what_a_rejoin_discards_is_kept_beside_the_data_directory(tmp_path):
    an_hour_east = datetime.timezone(datetime.timedelta(hours=1))
    now = datetime.datetime(2026, 11, 24, 9, 0, tzinfo=an_hour_east)  # 08:00 UTC
    data_dir = str(tmp_path / "main") + "/"
    assert pg_datadir.discarded_path(data_dir, now) == str(
        tmp_path / "main.discarded-20261124T080000Z")
    (tmp_path / "main.discarded-20261124T080000Z").mkdir()
    (tmp_path / "main.discarded-20261124T080000Z-2").mkdir()
    assert pg_datadir.discarded_path(data_dir, now) == str(
        tmp_path / "main.discarded-20261124T080000Z-3")


def test_the_wal_files_kept_are_private_copies(tmp_path):
    pg_wal = tmp_path / "main" / "pg_wal"
    pg_wal.mkdir(parents=True)
    (pg_wal / "000000010000000000000003").write_bytes(b"wal")
    (pg_wal / "00000002.history").write_text("1\t0/30268F8\tno recovery target\n")
    (pg_wal / "000000010000000000000004").write_bytes(b"not kept")
    kept = tmp_path / "main.discarded-20261124T080000Z"

    assert pg_datadir.keep_wal(str(tmp_path / "main"), ["000000010000000000000003",
                               "00000002.history"], str(kept), *IDS) == str(kept)

    assert sorted(entry.name for entry in (kept / "pg_wal").iterdir()) == [
        "000000010000000000000003", "00000002.history"]
    assert (kept / "pg_wal" / "000000010000000000000003").read_bytes() == b"wal"
    for path in (kept, kept / "pg_wal"):
        assert oct(path.stat().st_mode & 0o777) == "0o700"
    assert oct((kept / "pg_wal" / "00000002.history").stat().st_mode & 0o777) == "0o600"
    assert (pg_wal / "000000010000000000000003").exists()  # a copy
    with pytest.raises(FileExistsError):
        pg_datadir.keep_wal(str(tmp_path / "main"), [], str(kept), *IDS)


def test_a_timeline_s_history_and_the_wal_files_are_read_from_pg_wal(tmp_path):
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "00000003.history").write_text("1\t0/30268F8\t\n2\t0/4000000\t\n")
    (tmp_path / "pg_wal" / "000000030000000000000004").write_text("")
    assert pg_datadir.timeline_history(str(tmp_path), 3) == [(1, 0x30268F8), (2, 0x4000000)]
    assert pg_datadir.timeline_history(str(tmp_path), 1) == []
    assert pg_datadir.timeline_history(str(tmp_path), 2) is None
    assert pg_datadir.wal_file_names(str(tmp_path)) == [
        "00000003.history", "000000030000000000000004"]


def test_a_data_directory_left_aside_by_an_interrupted_rejoin_is_not_overwritten(tmp_path):
    (tmp_path / "main").mkdir()
    (tmp_path / "main.pg_replication-old").mkdir()
    with pytest.raises(errors.Refused, match="left by an interrupted rejoin; check whether"):
        pg_datadir.replace_data_dir(str(tmp_path / "main"), *IDS, lambda path: None)


def test_a_stopped_node_s_status_comes_from_its_control_file_and_data_directory(tmp_path):
    pg_datadir.configure_standby(str(tmp_path), "host=db1", "pg_b", *IDS)
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "00000003.history").write_text("")
    control = {"Database cluster state": "shut down in recovery",
               "Database system identifier": "7311650800973885350",
               "Latest checkpoint location": "0/3026880",
               "Latest checkpoint's TimeLineID": "2"}
    now = datetime.datetime(2026, 11, 24, 8, 0, tzinfo=datetime.timezone.utc)

    state = pg_datadir.node_status("pg-b", "stopped", False, control, str(tmp_path), now=now)

    assert state == {
        "node_name": "pg-b", "checked_at": "2026-11-24T08:00:00+00:00", "role": "stopped",
        "running": False, "cluster_state": "shut down in recovery",
        "system_identifier": "7311650800973885350", "last_checkpoint_lsn": "0/3026880",
        "fenced": False, "fence": None, "standby_of": {"host": "db1", "port": 5432},
        "timeline": 3,  # from the history file it fetched
    }
    standby = pg_datadir.node_status("pg-b", "standby", True, control, str(tmp_path),
                                   {"received_lsn": "0/5000000", "recovery_timelines": [4]})
    assert (standby["received_lsn"], standby["timeline"]) == ("0/5000000", 4)
    assert "recovery_timelines" not in standby
    primary = pg_datadir.node_status("pg-a", "primary", True, control, str(tmp_path),
                                   {"current_lsn": "0/5000000", "timeline": 5})
    assert primary["timeline"] == 5


def test_an_empty_data_directory_holds_no_cluster_and_has_no_timeline(tmp_path):
    assert not pg_datadir.holds_cluster(str(tmp_path))
    state = pg_datadir.node_status("pg-b", "stopped", False, {}, str(tmp_path))
    assert (state["role"], state["system_identifier"], state["timeline"]) == ("stopped", None, None)
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(b"")
    assert pg_datadir.holds_cluster(str(tmp_path))

"""pg_replication against real PostgreSQL 15 servers: a primary pg-a and a warm
standby pg-b on loopback (see pg_cluster.py). The figures the tests print (lag,
promotion and rejoin times) are measurements, not assertions."""

import os
import pwd
import re
from pathlib import Path

import pytest
from salt.exceptions import CommandExecutionError

from ha_core.pg_facts import parse_lsn as lsn
from tests.functional.pg_cluster import (  # noqa: F401 (fixtures)
    BIN,
    OS_USER,
    as_postgres,
    initdb,
    pg_nodes,
    pg_pair,
    streaming_standbys,
    wait_for,
)


def show(capsys, line):
    """Print a measured figure even when pytest captures output."""
    with capsys.disabled():
        print(f"\n    pg_replication: {line}", end="")


def received(node):
    """The LSN a standby has received up to, from its status."""
    return lsn(node.module.status()["received_lsn"] or "0/0")


def current_lsn(node):
    return lsn(node.sql("select pg_current_wal_lsn()"))


def fail_over(pair):
    """Stop the primary cleanly (its standby receives all its WAL) and
    promote the standby; return promote's result."""
    pair.primary.stop()
    return pair.standby.module.promote()


def diverge(pair, stop_mode="fast"):
    """Fail over, then let the old primary come back as a primary and take
    writes on timeline 1 that the new primary never sees (a split brain), and
    stop it (``stop_mode`` "immediate": it crashes). Return promote's result
    and the file node of the table it wrote, as its WAL names it."""
    promoted = fail_over(pair)
    pair.primary.start()
    pair.primary.sql("create table lost (i int); insert into lost select generate_series(1, 1000)")
    filenode = pair.primary.sql("select pg_relation_filenode('lost')")
    pair.primary.stop(stop_mode)
    return promoted, filenode


def lsn_range(text):
    start, end = text.split("-")
    return lsn(start), lsn(end)


def files_of(directory):
    """Every file under a directory, with its size and modification time."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns)
            for path in Path(directory).rglob("*") if path.is_file()}


def assert_private(path):
    status = path.stat()
    assert (pwd.getpwuid(status.st_uid).pw_name, oct(status.st_mode & 0o777)) == (
        OS_USER, "0o700")


def assert_kept_wal_holds(kept_wal, discarded_range, filenode):
    """The kept WAL reads from the start of the discarded range to its end,
    and holds the rows' inserts."""
    start, end = discarded_range.split("-")
    dump = as_postgres(BIN / "pg_waldump", "--path", kept_wal, "--timeline", "1",
                       "--start", start, "--end", end)
    first = re.search(r"lsn: ([0-9A-F]+/[0-9A-F]+),", dump.stdout).group(1)
    assert lsn(first) == lsn(start)
    assert re.search(rf"desc: INSERT.*rel \d+/\d+/{filenode} ", dump.stdout), dump.stdout[:2000]


def assert_streams_from(standby, primary, timeout=10):
    """standby streams from primary: the primary lists it streaming, and it
    receives what is written on the primary (read without SQL on it)."""
    assert standby.name in streaming_standbys(primary)
    primary.sql("create table if not exists rejoined (i int); insert into rejoined values (1)")
    target = current_lsn(primary)

    def streamed():
        state = standby.module.status()
        return (state["wal_receiver"]["status"] == "streaming"
                and lsn(state["received_lsn"]) >= target)

    wait_for(streamed, timeout, f"{standby.name} receiving {target:X}")


def test_status_of_a_primary_lists_its_streaming_standby_and_active_slot(pg_pair):
    state = pg_pair.primary.module.status()

    assert (state["role"], state["running"], state["cluster_state"]) == (
        "primary", True, "in production")
    assert (state["timeline"], state["fenced"], state["standby_of"]) == (1, False, None)
    [standby] = state["standbys"]
    assert (standby["application_name"], standby["client_addr"], standby["state"]) == (
        "pg-b", "127.0.0.1", "streaming")
    assert standby["lag_bytes"] >= 0 and standby["sync_state"] == "async"
    [slot] = state["slots"]
    assert (slot["slot_name"], slot["active"]) == ("pg_b", True)
    assert lsn(state["current_lsn"]) >= lsn(standby["replay_lsn"])


def test_status_of_a_warm_standby_reads_no_sql(pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    # A warm standby refuses every connection, so status can only have read
    # its files and processes.
    refused = standby.try_sql("select 1")
    assert refused.returncode != 0 and "Hot standby mode is disabled" in refused.stderr
    primary.sql("create table t (i int)")
    target = current_lsn(primary)

    wait_for(lambda: received(standby) >= target, 10, "the standby receiving the new table")
    state = standby.module.status()

    assert (state["role"], state["running"], state["cluster_state"]) == (
        "standby", True, "in archive recovery")
    assert state["standby_of"] == {"host": "127.0.0.1", "port": primary.port}
    assert state["system_identifier"] == primary.module.status()["system_identifier"]
    assert state["wal_receiver"]["status"] == "streaming"
    assert state["timeline"] == 1
    assert lsn(state["replayed_lsn"]) > 0


def test_status_of_a_stopped_node(pg_pair):
    standby = pg_pair.standby
    standby.stop()

    state = standby.module.status()

    assert (state["role"], state["running"], state["cluster_state"]) == (
        "stopped", False, "shut down in recovery")
    assert state["standby_of"] == {"host": "127.0.0.1", "port": pg_pair.primary.port}
    assert state["timeline"] == 1 and "received_lsn" not in state


def test_a_standby_holds_no_wal_its_primary_lacks(pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    primary.sql("create table t (i int); insert into t select generate_series(1, 1000)")

    running = standby.module.divergence(primary=primary.address)
    standby.stop()
    stopped = standby.module.divergence(primary=primary.address)

    for diverged in (running, stopped):
        assert (diverged["method"], diverged["timeline"], diverged["primary_timeline"]) == (
            "none", 1, 1)
        assert (diverged["discarded_lsn_range"], diverged["discarded_bytes"]) == (None, 0)
        assert diverged["fork_lsn"] == diverged["local_end_lsn"]
    assert lsn(stopped["local_end_lsn"]) <= current_lsn(primary)


def test_a_warm_standby_keeps_up_with_a_burst_of_writes(pg_pair, capsys):
    primary, standby = pg_pair.primary, pg_pair.standby
    primary.sql("create table burst (id int primary key, payload text)")
    start = current_lsn(primary)
    inserts = "".join(
        f"insert into burst select g, repeat('x', 100) from generate_series({n * 40000 + 1}, "
        f"{(n + 1) * 40000}) g;\n" for n in range(5))  # 200k rows in 5 transactions
    writer = primary.sql_in_background(inserts)
    behind, replay_lag_bytes, replay_lag_seconds = [], [], []
    while writer.poll() is None:
        primary_state = primary.module.status()
        standby_state = standby.module.status()
        [seen_by_primary] = primary_state["standbys"]
        behind.append(lsn(primary_state["current_lsn"]) - lsn(standby_state["received_lsn"]))
        replay_lag_bytes.append(seen_by_primary["lag_bytes"])
        replay_lag_seconds.append(seen_by_primary["lag_seconds"] or 0.0)
    assert writer.returncode == 0
    end = current_lsn(primary)

    _, catch_up = wait_for(lambda: received(standby) >= end, 10, "the standby catching up")

    assert behind, "status was read on both nodes during the writes"
    show(capsys, f"burst of 200k rows, {(end - start) / 2**20:.1f} MiB of WAL, "
                 f"{len(behind)} status reads of both nodes during it: received up to "
                 f"{max(behind)} bytes behind the primary; replay up to {max(replay_lag_bytes)} "
                 f"bytes and {max(replay_lag_seconds):.3f} s behind; everything received "
                 f"{catch_up:.2f} s after the last commit")


def test_promote_and_rejoin_refuse_a_node_in_the_wrong_role(pg_pair):
    with pytest.raises(CommandExecutionError, match="it is primary, not a running standby"):
        pg_pair.primary.module.promote()
    with pytest.raises(CommandExecutionError, match="running as standby.*stop or fence it first"):
        pg_pair.standby.module.rejoin(primary=pg_pair.primary.address)
    pg_pair.standby.stop()
    with pytest.raises(CommandExecutionError, match="it is stopped, not a running standby"):
        pg_pair.standby.module.promote()


def test_promotion_makes_the_standby_a_writable_primary_on_a_new_timeline(pg_pair, capsys):
    primary, standby = pg_pair.primary, pg_pair.standby
    primary.sql("create table before_failover (i int); insert into before_failover values (1)")
    [seen_by_primary] = primary.module.status()["standbys"]
    primary.stop()
    shutdown_checkpoint = primary.module.status()["last_checkpoint_lsn"]
    # With its primary gone the standby still tells what it received (the
    # shutdown checkpoint, once its WAL receiver has written it: the runbook
    # waits for that too), and a promotion that would lose more than allowed
    # is refused.
    wait_for(lambda: lsn(standby.module.status()["received_lsn"]) >= lsn(shutdown_checkpoint),
             10, "the standby receiving the shutdown checkpoint")
    with pytest.raises(CommandExecutionError, match="unreachable and the standby is \\d+ bytes"):
        standby.module.promote(max_lag_bytes=1024, primary_lsn="FF/0")

    result = standby.module.promote(max_lag_bytes=0, primary_lsn=shutdown_checkpoint)

    assert (result["promoted"], result["timeline"], result["lag_bytes"]) == (True, 2, 0)
    # The standby had everything the primary flushed to it, its shutdown
    # checkpoint included: the new timeline starts after both.
    assert lsn(result["switch_lsn"]) >= lsn(seen_by_primary["flush_lsn"])
    assert lsn(result["switch_lsn"]) > lsn(shutdown_checkpoint)
    state = standby.module.status()
    assert (state["role"], state["timeline"], state["standby_of"]) == ("primary", 2, None)
    standby.sql("insert into before_failover values (2)")
    assert standby.sql("select count(*) from before_failover") == "2"
    show(capsys, f"promotion: writable after {result['seconds']:.2f} s, timeline 2 from "
                 f"{result['switch_lsn']}")


def test_a_cleanly_stopped_former_primary_rejoins_without_rewind(pg_pair, capsys):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    promoted = fail_over(pg_pair)
    diverged = old_primary.module.divergence(primary=new_primary.address)
    assert (diverged["method"], diverged["discarded_lsn_range"], diverged["discarded_bytes"]) == (
        "none", None, 0)
    # Its shutdown checkpoint ends where the new primary's timeline begins.
    assert diverged["fork_lsn"] == diverged["local_end_lsn"] == promoted["switch_lsn"]

    result = old_primary.module.rejoin(primary=new_primary.address)

    assert result["method"] == "none" and result["timeline"] == 2
    assert (result["discarded_lsn_range"], result["discarded_bytes"], result["kept"]) == (
        None, 0, None)
    assert old_primary.kept_dirs() == []
    assert_streams_from(old_primary, new_primary)
    state = old_primary.module.status()
    assert (state["role"], state["timeline"]) == ("standby", 2)
    assert state["standby_of"] == {"host": "127.0.0.1", "port": new_primary.port}
    assert "pg_a" in [slot["slot_name"] for slot in new_primary.module.status()["slots"]]
    show(capsys, f"rejoin without rewind: streaming after {result['seconds']:.2f} s")


def test_a_diverged_former_primary_is_not_rejoined_without_consent(pg_pair):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    promoted, _ = diverge(pg_pair)

    diverged = old_primary.module.divergence(primary=new_primary.address)

    assert (diverged["method"], diverged["timeline"], diverged["primary_timeline"]) == (
        "rewind", 1, 2)
    assert (diverged["fork_lsn"], diverged["fork_timeline"]) == (promoted["switch_lsn"], 1)
    start, end = lsn_range(diverged["discarded_lsn_range"])
    assert start == lsn(promoted["switch_lsn"]) and end == lsn(diverged["local_end_lsn"])
    assert diverged["discarded_bytes"] == end - start > 0
    # Its WAL ends after its shutdown checkpoint, which is its last record.
    assert end > lsn(old_primary.module.status()["last_checkpoint_lsn"])
    before = files_of(old_primary.data_dir)
    consent = (f"salt pg-a pg_replication.rejoin primary={new_primary.address} "
               f"discard={diverged['discarded_lsn_range']}")

    with pytest.raises(CommandExecutionError) as refused:
        old_primary.module.rejoin(primary=new_primary.address)
    assert f"it would discard {diverged['discarded_lsn_range']}, " in str(refused.value)
    assert f"{diverged['discarded_bytes']} bytes" in str(refused.value)
    assert "nothing was changed" in str(refused.value) and consent in str(refused.value)
    # A consent names the range: one for another range is none.
    other = f"{promoted['switch_lsn']}-{diverged['fork_lsn'].split('/')[0]}/{end - 1:X}"
    for wrong in (other, diverged["fork_lsn"], "yes"):
        with pytest.raises(CommandExecutionError, match=f"discard={wrong} is not what it would "
                           f"discard, {diverged['discarded_lsn_range']}") as refused:
            old_primary.module.rejoin(primary=new_primary.address, discard=wrong)
        assert consent in str(refused.value)

    # Nothing changed: not a file of its data directory, no slot on the new
    # primary, nothing kept; started, it is the primary it was, with its rows.
    assert files_of(old_primary.data_dir) == before
    assert "pg_a" not in [slot["slot_name"] for slot in new_primary.module.status()["slots"]]
    assert old_primary.kept_dirs() == []
    old_primary.start()
    state = old_primary.module.status()
    assert (state["role"], state["timeline"], state["standby_of"]) == ("primary", 1, None)
    assert old_primary.sql("select count(*) from lost") == "1000"
    # Running as a writable primary, it is a split brain, not a node to rejoin;
    # what it would discard can still be read.
    with pytest.raises(CommandExecutionError, match="split brain: pg-a and .* are both writable "
                       "primaries.*pg_replication.fence.*pg_replication.divergence"):
        old_primary.module.rejoin(primary=new_primary.address,
                                  discard=diverged["discarded_lsn_range"])
    running = old_primary.module.divergence(primary=new_primary.address)
    assert running["fork_lsn"] == diverged["fork_lsn"]
    assert running["discarded_bytes"] >= diverged["discarded_bytes"]


def test_a_former_primary_that_wrote_ahead_rejoins_by_rewind(pg_pair, capsys):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    # Split brain: the old primary comes back as a primary and takes writes
    # on timeline 1 that the new primary never sees.
    _, filenode = diverge(pg_pair)
    diverged = old_primary.module.divergence(primary=new_primary.address)

    result = old_primary.module.rejoin(primary=new_primary.address,
                                       discard=diverged["discarded_lsn_range"])

    assert result["method"] == "rewind" and "rewind_error" not in result
    assert result["timeline"] == 2
    assert_streams_from(old_primary, new_primary)
    assert old_primary.module.status()["role"] == "standby"
    # What it discarded is reported, and a copy of its WAL kept beside the
    # data directory.
    assert (result["discarded_lsn_range"], result["discarded_bytes"]) == (
        diverged["discarded_lsn_range"], diverged["discarded_bytes"])
    start, end = lsn_range(result["discarded_lsn_range"])
    assert result["discarded_bytes"] == end - start
    kept = Path(result["kept"])
    assert old_primary.kept_dirs() == [kept]
    assert kept.name.startswith("data.discarded-") and sorted(os.listdir(kept)) == ["pg_wal"]
    assert_private(kept)
    assert_private(kept / "pg_wal")
    assert_kept_wal_holds(kept / "pg_wal", result["discarded_lsn_range"], filenode)
    assert not (old_primary.root / "data.pg_replication-old").exists()
    show(capsys, f"rejoin by rewind: {result['seconds']:.2f} s in all, pg_rewind "
                 f"{result['rewind_seconds']:.2f} s, {result['discarded_bytes']} bytes of WAL "
                 f"discarded and kept")


def test_a_crashed_diverged_former_primary_discards_all_the_wal_it_wrote(pg_pair):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    promoted = fail_over(pg_pair)
    old_primary.start()
    old_primary.sql("create table lost (i int); insert into lost select generate_series(1, 1000)")
    filenode = old_primary.sql("select pg_relation_filenode('lost')")
    flushed = lsn(old_primary.sql("select pg_current_wal_flush_lsn()"))
    old_primary.stop("immediate")
    assert old_primary.module.status()["cluster_state"] == "in production"  # crashed

    diverged = old_primary.module.divergence(primary=new_primary.address)

    # Its last checkpoint is not its last record: pg_waldump found the end.
    assert lsn(diverged["local_end_lsn"]) >= flushed
    assert diverged["fork_lsn"] == promoted["switch_lsn"]
    assert diverged["discarded_bytes"] == lsn(diverged["local_end_lsn"]) - lsn(
        promoted["switch_lsn"])
    result = old_primary.module.rejoin(primary=new_primary.address,
                                       discard=diverged["discarded_lsn_range"])
    assert (result["method"], result["discarded_lsn_range"]) == (
        "rewind", diverged["discarded_lsn_range"])
    assert_streams_from(old_primary, new_primary)
    assert_kept_wal_holds(Path(result["kept"]) / "pg_wal", result["discarded_lsn_range"],
                          filenode)


def test_a_failed_rewind_falls_back_to_a_base_backup_that_keeps_the_data_directory(pg_pair):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    _, filenode = diverge(pg_pair)
    diverged = old_primary.module.divergence(primary=new_primary.address)
    # pg_rewind lists the source's files with pg_ls_dir.
    new_primary.sql("revoke execute on function pg_catalog.pg_ls_dir(text, boolean, boolean) "
                    "from replicator")

    result = old_primary.module.rejoin(primary=new_primary.address,
                                       discard=diverged["discarded_lsn_range"])

    assert result["method"] == "basebackup" and "pg_ls_dir" in result["rewind_error"]
    assert_streams_from(old_primary, new_primary)
    kept = Path(result["kept"])
    assert old_primary.kept_dirs() == [kept]
    assert sorted(os.listdir(kept)) == ["data-after-failed-rewind", "pg_wal"]
    assert (kept / "data-after-failed-rewind" / "PG_VERSION").exists()
    assert_private(kept / "data-after-failed-rewind")
    assert_kept_wal_holds(kept / "pg_wal", result["discarded_lsn_range"], filenode)
    assert not (old_primary.root / "data.pg_replication-old").exists()


def test_a_node_of_another_cluster_rejoins_by_base_backup(pg_pair, capsys):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    fail_over(pg_pair)
    old_primary.wipe()
    initdb(old_primary.data_dir)  # an unrelated cluster: nothing to rewind from
    assert (old_primary.module.status()["system_identifier"]
            != new_primary.module.status()["system_identifier"])

    result = old_primary.module.rejoin(primary=new_primary.address)

    assert result["method"] == "basebackup" and result["timeline"] == 2
    assert_streams_from(old_primary, new_primary)
    state = old_primary.module.status()
    assert state["system_identifier"] == new_primary.module.status()["system_identifier"]
    assert oct(old_primary.data_dir.stat().st_mode & 0o777) == "0o700"
    assert not (old_primary.root / "data.pg_replication-old").exists()
    # It shares no history with the primary: nothing counted, nothing kept.
    assert (result["discarded_lsn_range"], result["discarded_bytes"], result["kept"]) == (
        None, 0, None)
    assert old_primary.kept_dirs() == []
    show(capsys, f"rejoin by base backup: {result['seconds']:.2f} s in all, pg_basebackup "
                 f"{result['basebackup_seconds']:.2f} s")


def test_a_released_node_starts_as_the_primary_on_its_own_timeline(pg_pair):
    """What airflow_ha.unfence does on the writer it picked: the node a
    start guard fenced (here, fenced and started in recovery) takes writes
    again, with its data, without a promotion (no new timeline)."""
    primary = pg_pair.primary
    primary.sql("create table released_probe as select 1 as kept")
    timeline = primary.module.status()["timeline"]
    with pytest.raises(CommandExecutionError, match="is not fenced: there is nothing to release"):
        primary.module.release(generation=3)
    primary.module.fence(reason="start guard: could not prove it is the primary")
    primary.start()
    assert primary.module.status()["role"] == "standby"

    released = primary.module.release(generation=3)

    assert (released["released"], released["generation"]) == (True, 3)
    state = primary.module.status()
    assert (state["role"], state["fenced"], state["timeline"]) == ("primary", False, timeline)
    assert primary.sql("select kept from released_probe") == "1"
    assert sorted(path.name for path in primary.data_dir.glob("pg_replication.*")) == []
    assert not (primary.data_dir / "standby.signal").exists()


def test_a_fenced_primary_stops_and_comes_back_only_in_recovery(pg_pair):
    primary = pg_pair.primary

    result = primary.module.fence(reason="failover drill")

    assert (result["fenced"], result["was_running"], result["reason"]) == (
        True, True, "failover drill")
    state = primary.module.status()
    assert (state["role"], state["running"], state["fenced"]) == ("stopped", False, True)
    assert primary.module.is_fenced() is True
    again = primary.module.fence(reason="again")
    assert (again["was_running"], again["fenced_at"]) == (False, result["fenced_at"])
    # Started by hand, as an operator or a highstate might: it comes up in
    # recovery, accepting no writes (and, hot_standby being off, no SQL).
    primary.start()
    state = primary.module.status()
    assert (state["role"], state["cluster_state"], state["fenced"]) == (
        "standby", "in archive recovery", True)
    assert primary.try_sql("select 1").returncode != 0
    with pytest.raises(CommandExecutionError, match="it is fenced"):
        primary.module.promote()

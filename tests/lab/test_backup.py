"""Backups on the lab: the pgBackRest repository on airflow-lb1 (role
backup), WAL archived by the primary over pgBackRest's TLS server, the
first full backup taken by the highstate, orch.backup, and orch.restore
into a scratch directory on the standby, to a time and to a named restore
point, beside the running pair. The benchmark prints the full backup's
time and size, an incremental one after a burst of writes, the restore's
time and how long the archive lagged behind the burst."""

import json
import time

import pytest

from tests.conftest import salt_json
from tests.lab.writers import SERVER1, SERVER2, orchestrate, psql, salt_run, writable

pytestmark = pytest.mark.lab

REPOSITORY = "airflow-lb1"


def salt_call(node, function, *args):
    """A function's result on node (the CLI's JSON)."""
    return salt_json("--timeout=600", node, function, *args)[node]


@pytest.fixture(scope="module")
def primary(lab):
    return SERVER1 if writable(SERVER1) else SERVER2


def test_the_highstate_made_the_stanza_and_a_full_backup_and_schedules_more(lab):
    info = salt_call(REPOSITORY, "pg_backup.info")
    assert info["status"] == "ok", info
    assert [backup["type"] for backup in info["backups"]][:1] == ["full"], info
    assert salt_call(REPOSITORY, "pg_backup.check")["ok"] is True
    for timer in ("airflow-backup-full.timer", "airflow-backup-diff.timer",
                  "airflow-backup-incr.timer"):
        assert salt_call(REPOSITORY, "service.status", timer) is True, timer
    copy = salt_call(REPOSITORY, "pg_backup.status")["redis_copy"]
    assert copy and copy["bytes"] > 0, copy


def test_status_shows_the_backups_and_no_problem(lab):
    returncode, output = salt_run("airflow_ha.status")
    assert returncode == 0, output
    assert "backups on airflow-lb1: stanza ok" in output, output
    assert "  full: " in output and "archiving on the primary: last " in output, output
    assert "problems:" not in output, output


def _restored_rows(node):
    return salt_call(node, "pg_backup.restored_sql",
                     "SELECT string_agg(mark, ',' ORDER BY mark) FROM dr_probe", "database=airflow")


def _restore(say, *pillar):
    returncode, output = orchestrate(say, "orch.restore", *pillar)
    assert returncode == 0, output
    return output


def test_a_restore_to_a_time_holds_what_was_committed_before_it(lab, say, primary):
    psql(primary, "CREATE TABLE IF NOT EXISTS dr_probe (mark text primary key); "
                  "TRUNCATE dr_probe; INSERT INTO dr_probe VALUES ('A')")
    target = psql(primary, "SELECT clock_timestamp()").stdout.strip()
    time.sleep(1)
    psql(primary, "INSERT INTO dr_probe VALUES ('B')")
    salt_run("airflow_ha.restore_point", "after-b")
    psql(primary, "INSERT INTO dr_probe VALUES ('C')")
    # pgBackRest's check switches WAL segments and waits for them in the archive.
    assert salt_call(REPOSITORY, "pg_backup.check")["ok"] is True

    output = _restore(say, f"pillar={json.dumps({'time': target})}")
    standby = SERVER2 if primary == SERVER1 else SERVER1
    assert f"node {standby}" in output, output  # the standby by default
    assert _restored_rows(standby) == "A"
    assert psql(primary, "SELECT count(*) FROM dr_probe").stdout.strip() == "3"
    directory = salt_call(standby, "cmd.run", "ls -d /var/lib/pgbackrest-restore/*")
    assert salt_call(standby, "pg_backup.drop_restored", directory)["removed"] == directory

    _restore(say, 'pillar={"restore_point": "after-b"}')
    assert _restored_rows(standby) == "A,B"
    directory = salt_call(standby, "cmd.run", "ls -d /var/lib/pgbackrest-restore/*")
    salt_call(standby, "pg_backup.drop_restored", directory)


def test_a_restore_target_that_could_mean_several_times_is_refused(lab, say):
    returncode, output = orchestrate(say, "orch.restore", 'pillar={"time": "2026-12-02 04:31"}')
    assert returncode != 0
    assert "has no UTC offset, so it could mean any time zone" in output, output
    for node in (SERVER1, SERVER2):
        assert salt_call(node, "file.find", "/var/lib/pgbackrest-restore", "mindepth=1") in ([], None)


def test_a_failed_copy_of_the_broker_leaves_the_backup_and_shows_in_status(lab, say):
    """The Redis copy is a unit of its own: with the password refused, the
    database's backup is still taken, the run says the copy failed, and
    status names the unit until a copy succeeds."""
    environment = "/etc/pgbackrest/airflow-backup.env"
    salt_call(REPOSITORY, "file.copy", environment, f"{environment}.kept")
    try:
        salt_call(REPOSITORY, "file.write", environment, "REDISCLI_AUTH=not-the-password")
        returncode, output = orchestrate(say, "orch.backup", 'pillar={"type": "incr"}')
        assert returncode == 0, output
        assert "airflow-redis-copy@incr.service FAILED" in output, output
        assert salt_call(REPOSITORY, "pg_backup.info")["backups"][-1]["type"] == "incr"
        returncode, output = salt_run("airflow_ha.status")
        assert "airflow-redis-copy@incr.service failed on its last run" in output, output
    finally:
        salt_call(REPOSITORY, "file.rename", f"{environment}.kept", environment)
    returncode, output = orchestrate(say, "orch.backup", 'pillar={"type": "incr"}')
    assert returncode == 0, output
    assert "Redis broker copy /var/lib/pgbackrest/redis/dump-" in output, output
    returncode, output = salt_run("airflow_ha.status")
    assert "problems:" not in output, output


def test_benchmark_backup_and_restore(lab, say, primary):
    full = next(backup for backup in salt_call(REPOSITORY, "pg_backup.info")["backups"]
                if backup["type"] == "full")
    say(f"BENCHMARK backup: full backup {full['seconds']} s, database "
        f"{full['database_bytes'] / 2**20:.1f} MiB, stored {full['repository_bytes'] / 2**20:.1f} MiB")

    # A burst of writes (about 50 MiB of WAL), then how long until the archive holds it all.
    started = time.monotonic()
    psql(primary, "DROP TABLE IF EXISTS dr_burst; CREATE TABLE dr_burst (id int, pad text); "
                  "INSERT INTO dr_burst SELECT g, repeat('x', 400) FROM generate_series(1, 100000) g")
    burst = time.monotonic() - started
    while salt_call(primary, "pg_backup.archive_state")["ready_count"]:
        time.sleep(0.5)
    say(f"BENCHMARK backup: archive lag after a {burst:.1f} s write burst: "
        f"{time.monotonic() - started - burst:.1f} s until no WAL waited")

    started = time.monotonic()
    returncode, output = orchestrate(say, "orch.backup", 'pillar={"type": "incr"}')
    assert returncode == 0, output
    incremental = salt_call(REPOSITORY, "pg_backup.info")["backups"][-1]
    assert incremental["type"] == "incr"
    say(f"BENCHMARK backup: incremental backup after the burst: {incremental['seconds']} s in "
        f"pgBackRest, {time.monotonic() - started:.1f} s for orch.backup; copied "
        f"{incremental['backup_bytes'] / 2**20:.1f} MiB, stored "
        f"{incremental['repository_bytes'] / 2**20:.1f} MiB")

    started = time.monotonic()
    _restore(say)
    standby = SERVER2 if primary == SERVER1 else SERVER1
    assert salt_call(standby, "pg_backup.restored_sql", "SELECT count(*) FROM dr_burst",
                     "database=airflow") == "100000"
    say(f"BENCHMARK backup: restore of the latest state: {time.monotonic() - started:.1f} s "
        "for orch.restore")
    directory = salt_call(standby, "cmd.run", "ls -d /var/lib/pgbackrest-restore/*")
    salt_call(standby, "pg_backup.drop_restored", directory)
    psql(primary, "DROP TABLE dr_burst")

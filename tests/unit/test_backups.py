"""ha_core.backups: what ``pgbackrest info`` says, the restore targets an
operator may ask for, how old a backup may be given its schedule, and the
problems ``salt-run airflow_ha.status`` reports."""

import datetime

import pytest

from ha_core.backups import (archive_problems, backup_problems, describe_target,
                             disaster_refusal, longest_gap, parse_calendar_elapses,
                             restore_target, summarize_info)
from ha_core.errors import InvalidInput
from ha_core.report import backup_text, redis_copy_text

UTC = datetime.timezone.utc

# pgbackrest 2.45's `info --output=json` after a full backup (trimmed to a stanza).
INFO = [{
    "archive": [{"database": {"id": 1, "repo-key": 1}, "id": "15-1",
                 "max": "000000010000000000000003", "min": "000000010000000000000001"}],
    "backup": [{
        "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000003"},
        "backrest": {"format": 5, "version": "2.45"}, "database": {"id": 1, "repo-key": 1},
        "error": False,
        "info": {"delta": 22992307, "repository": {"delta": 2811662, "size": 2811662},
                 "size": 22992307},
        "label": "20261202-043355F", "lsn": {"start": "0/2000028", "stop": "0/3000050"},
        "prior": None, "reference": None,
        "timestamp": {"start": 1796186035, "stop": 1796186038}, "type": "full"}],
    "cipher": "none", "name": "airflow",
    "status": {"code": 0, "lock": {"backup": {"held": False}}, "message": "ok"},
}]


def test_info_gives_each_backup_and_the_archive():
    summary = summarize_info(INFO, "airflow")
    assert summary["status"] == "ok"
    assert summary["archive"] == {"min": "000000010000000000000001",
                                  "max": "000000010000000000000003"}
    assert summary["backups"] == [{
        "label": "20261202-043355F", "type": "full",
        "started": "2026-12-02T04:33:55+00:00", "stopped": "2026-12-02T04:33:58+00:00",
        "seconds": 3, "database_bytes": 22992307, "backup_bytes": 22992307,
        "repository_bytes": 2811662,
        "wal_start": "000000010000000000000002", "wal_stop": "000000010000000000000003"}]


def test_a_stanza_the_repository_lacks_is_said_so():
    summary = summarize_info(INFO, "other")
    assert summary["status"] == "no stanza other in the repository"
    assert summary["backups"] == []


# --- restore targets -------------------------------------------------------------------

def test_latest_restores_to_the_end_of_the_archive():
    assert restore_target() == ["--type=default"]


def test_a_time_with_its_offset_stops_there_and_promotes():
    assert restore_target(time="2026-12-02T04:31:00Z") == [
        "--type=time", "--target=2026-12-02 04:31:00+00:00", "--target-action=promote"]


def test_a_restore_point_stops_there():
    assert restore_target(restore_point="before-upgrade") == [
        "--type=name", "--target=before-upgrade", "--target-action=promote"]


@pytest.mark.parametrize("arguments, title", [
    ({}, "the end of the archive"),
    ({"time": "2026-12-02 04:31:00+00:00"}, "2026-12-02 04:31:00+00:00"),
    ({"restore_point": "before-upgrade"}, "restore point before-upgrade"),
])
def test_a_step_title_names_the_target(arguments, title):
    assert describe_target(**arguments) == title


@pytest.mark.parametrize("arguments, message", [
    ({"time": "2026-12-02 04:31:00"}, "has no UTC offset"),
    ({"time": "yesterday"}, "is not an ISO 8601 time"),
    ({"time": "2026-12-02 04:31:00+00:00", "restore_point": "x"}, "both time and restore_point"),
    ({"target": "earliest"}, "unknown target 'earliest'"),
])
def test_a_target_that_could_mean_several_things_is_refused(arguments, message):
    with pytest.raises(InvalidInput, match=message):
        restore_target(**arguments)


# --- schedules --------------------------------------------------------------------------

CALENDAR = """\
  Original form: Mon..Sat *-*-* 01:00:00
Normalized form: Mon..Sat *-*-* 01:00:00
    Next elapse: Sat 2026-12-05 01:00:00 UTC
       From now: 2 days left
       Iter. #2: Mon 2026-12-07 01:00:00 UTC
       From now: 4 days left
       Iter. #3: Tue 2026-12-08 01:00:00 UTC
"""


def test_the_longest_gap_of_a_schedule_spans_its_weekend():
    elapses = parse_calendar_elapses(CALENDAR)
    assert elapses[0] == datetime.datetime(2026, 12, 5, 1, tzinfo=UTC)
    assert longest_gap(elapses) == 2 * 86400
    assert longest_gap(elapses[:1]) is None


NOW = datetime.datetime(2026, 12, 2, 12, tzinfo=UTC)


def _backup(kind, hours_ago):
    return {"type": kind, "stopped": (NOW - datetime.timedelta(hours=hours_ago)).isoformat()}


def test_a_recent_full_backup_stands_for_the_weaker_types():
    allowed = {"full": 8 * 86400, "diff": 2 * 86400, "incr": 4 * 3600}
    assert backup_problems([_backup("full", 1)], allowed, NOW) == []


def test_a_type_older_than_its_schedule_allows_is_a_problem():
    allowed = {"full": 8 * 86400, "incr": 4 * 3600}
    problems = backup_problems([_backup("full", 30), _backup("incr", 5)], allowed, NOW)
    assert problems == ["the newest incr backup is 5.0 h old, its schedule allows 4.0 h: see "
                        "`journalctl -u airflow-backup@incr` on the backup node, then take one "
                        "with orch.backup"]


def test_no_backup_at_all_is_a_problem_with_the_command_that_takes_one():
    problems = backup_problems([], {"full": 8 * 86400}, NOW)
    assert problems == ["there is no full backup yet: take one with salt-run state.orchestrate "
                        "orch.backup pillar='{\"type\": \"full\"}'"]


# --- archiving --------------------------------------------------------------------------

def test_wal_waiting_past_the_limit_is_a_problem_naming_the_last_failure():
    archiver = {"ready_count": 12, "oldest_ready_seconds": 900.4,
                "last_failed_wal": "00000002000000000000000A",
                "last_failed_time": "2026-12-02T11:59:00+00:00"}
    assert archive_problems(archiver, "airflow-server2", 300, "airflow") == [
        "12 WAL file(s) on airflow-server2 wait to be archived, the oldest for 900 s, and "
        "archiving 00000002000000000000000A last failed at 2026-12-02T11:59:00+00:00: the "
        "backups cannot restore past them; see PostgreSQL's log on airflow-server2, and run "
        "`pgbackrest --stanza=airflow check` there as postgres"]


def test_wal_archived_in_time_is_no_problem():
    assert archive_problems({"ready_count": 1, "oldest_ready_seconds": 2.0}, "s", 300, "airflow") == []
    assert archive_problems({"ready_count": 0, "oldest_ready_seconds": None}, "s", 300, "airflow") == []


def test_the_status_lines_show_the_newest_backup_of_each_type():
    state = dict(summarize_info(INFO, "airflow"), node="airflow-lb1",
                 archiver={"last_archived_wal": "000000010000000000000003",
                           "last_archived_time": "2026-12-02T04:33:58+00:00", "ready_count": 0},
                 redis_copy=None)
    assert backup_text(state).splitlines() == [
        "backups on airflow-lb1: stanza ok",
        "  full: 20261202-043355F, stopped 2026-12-02T04:33:58+00:00, 2.7 MiB stored",
        "  WAL archive: 000000010000000000000001 to 000000010000000000000003",
        "  archiving on the primary: last 000000010000000000000003 at "
        "2026-12-02T04:33:58+00:00, 0 waiting",
    ]


def test_a_copy_of_the_broker_reads_as_its_file_or_its_failed_unit():
    assert redis_copy_text(None) == "none yet"
    assert redis_copy_text({"path": "/var/lib/pgbackrest/redis/dump-20261202T043400Z-incr.rdb",
                            "bytes": 4096, "written": "2026-12-02T04:34:00+00:00"}) == (
        "/var/lib/pgbackrest/redis/dump-20261202T043400Z-incr.rdb (4096 bytes), "
        "written 2026-12-02T04:34:00+00:00")
    assert redis_copy_text({"failed": "airflow-redis-copy@incr.service", "journal": "..."}) == (
        "airflow-redis-copy@incr.service FAILED (see journalctl -u "
        "airflow-redis-copy@incr.service on the backup node)")


# --- disaster recovery -------------------------------------------------------------------

SERVERS = ["airflow-server1", "airflow-server2"]
STOPPED = {"role": "stopped", "timeline": None}


def test_disaster_recovery_runs_with_every_server_stopped_and_a_backup():
    states = {"airflow-server1": STOPPED, "airflow-server2": {"role": "standby", "timeline": 3}}
    assert disaster_refusal("airflow-server1", SERVERS, states, [{"label": "F"}]) is None


def test_disaster_recovery_refuses_while_a_primary_runs_naming_the_runbooks_to_use():
    states = {"airflow-server1": STOPPED, "airflow-server2": {"role": "primary", "timeline": 3}}
    refusal = disaster_refusal("airflow-server1", SERVERS, states, [{"label": "F"}])
    assert refusal.startswith("PostgreSQL on airflow-server2 runs as a primary: the cluster is "
                              "not lost. Use orch.failover or orch.failback")


def test_disaster_recovery_refuses_a_silent_server_a_stranger_or_an_empty_repository():
    states = {"airflow-server1": STOPPED, "airflow-server2": "its minion does not answer"}
    assert disaster_refusal("airflow-server1", SERVERS, states, [{"label": "F"}]) == (
        "airflow-server2 did not answer (its minion does not answer): boot or rebuild it and "
        "accept its minion's key, then run again")
    both_stopped = dict.fromkeys(SERVERS, STOPPED)
    assert disaster_refusal("airflow-lb1", SERVERS, both_stopped, [{"label": "F"}]) == (
        "airflow-lb1 is not a database node: give node as one of airflow-server1, airflow-server2")
    assert disaster_refusal("airflow-server1", SERVERS, both_stopped, []) == (
        "the repository holds no backup: there is nothing to restore from")

"""
Backups and the WAL archive (pgBackRest): what ``pgbackrest info`` says,
which restore target an operator asked for, how long a backup may be old
given its schedule, and the problems ``salt-run airflow_ha.status``
reports.
"""

import datetime

from ha_core.errors import InvalidInput

# Weakest last: a full backup is also the newest base of a differential or
# an incremental one.
BACKUP_TYPES = ("full", "diff", "incr")


def summarize_info(info, stanza):
    """
    Return the stanza's part of ``pgbackrest info --output=json``: its
    ``status`` (pgBackRest's message, "ok" when usable), ``backups``
    (oldest first; each ``label``, ``type``, ``started`` and ``stopped`` as
    UTC ISO 8601, ``seconds``, ``database_bytes``, ``backup_bytes`` (what
    it copied), ``repository_bytes`` (what it stores, compressed),
    ``wal_start`` and ``wal_stop``) and ``archive`` (``min`` and ``max``,
    the oldest and newest WAL segments kept, or None).
    """
    for entry in info:
        if entry.get("name") == stanza:
            break
    else:
        return {"status": f"no stanza {stanza} in the repository", "backups": [],
                "archive": {"min": None, "max": None}}
    backups = []
    for backup in entry.get("backup", []):
        started, stopped = backup["timestamp"]["start"], backup["timestamp"]["stop"]
        backups.append({
            "label": backup["label"],
            "type": backup["type"],
            "started": _iso(started),
            "stopped": _iso(stopped),
            "seconds": stopped - started,
            "database_bytes": backup["info"]["size"],
            "backup_bytes": backup["info"]["delta"],
            "repository_bytes": backup["info"]["repository"]["delta"],
            "wal_start": backup["archive"]["start"],
            "wal_stop": backup["archive"]["stop"],
        })
    archives = entry.get("archive") or [{}]
    return {
        "status": entry.get("status", {}).get("message", "unknown"),
        "backups": backups,
        "archive": {"min": min((a.get("min") for a in archives if a.get("min")), default=None),
                    "max": max((a.get("max") for a in archives if a.get("max")), default=None)},
    }


def _iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


def describe_target(time=None, restore_point=None):
    """How a step's title names the restore target of ``restore_target``."""
    if restore_point:
        return f"restore point {restore_point}"
    return str(time) if time else "the end of the archive"


def restore_target(target="latest", time=None, restore_point=None):
    """
    Return the pgBackRest restore options for what the operator asked
    for: the end of the archive (``target="latest"``), a ``time`` (ISO 8601
    with its UTC offset, such as ``2026-12-02 04:31:00+00``) or a named
    ``restore_point`` (``salt-run airflow_ha.restore_point NAME``). The
    restored copy stops at the target and is promoted there.
    """
    if time and restore_point:
        raise InvalidInput("both time and restore_point were given",
                           fix="give one of them (or neither, for the latest state)")
    if restore_point:
        return ["--type=name", f"--target={restore_point}", "--target-action=promote"]
    if time:
        try:
            when = datetime.datetime.fromisoformat(str(time).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"time {time!r} is not an ISO 8601 time",
                               fix="give it as YYYY-MM-DD HH:MM:SS+00:00") from None
        if when.utcoffset() is None:
            raise InvalidInput(f"time {time!r} has no UTC offset, so it could mean any time zone",
                               fix=f"add one, for example {time}+00:00 for UTC")
        return ["--type=time", f"--target={when.isoformat(sep=' ')}", "--target-action=promote"]
    if target != "latest":
        raise InvalidInput(f"unknown target {target!r}",
                           fix="give target=latest, time=... or restore_point=...")
    return ["--type=default"]


def longest_gap(elapses):
    """The longest time in seconds between consecutive elapses (datetimes)
    of a calendar, or None with fewer than two."""
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(elapses, elapses[1:])]
    return max(gaps) if gaps else None


def parse_calendar_elapses(text):
    """The elapses that ``systemd-analyze calendar --iterations=N`` prints
    ("Next elapse: Thu 2026-12-03 01:00:00 UTC", "Iter. #2: ..."), as UTC
    datetimes; the expression must be given in UTC (TZ=UTC)."""
    elapses = []
    for line in text.splitlines():
        label, _, value = line.strip().partition(": ")
        if label == "Next elapse" or label.startswith("Iter. #"):
            weekday_date_time = value.rsplit(" ", 1)[0]
            elapses.append(datetime.datetime.strptime(
                weekday_date_time, "%a %Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc))
    return elapses


def backup_problems(backups, allowed_seconds, now):
    """
    Return the problems of the backups (``summarize_info``'s): for each
    scheduled type (``allowed_seconds``: the longest its newest backup may
    be old, from its schedule), when no backup of the type or a stronger
    one is younger than that.
    """
    problems = []
    for kind, allowed in allowed_seconds.items():
        stronger = BACKUP_TYPES[:BACKUP_TYPES.index(kind) + 1]
        newest = max((datetime.datetime.fromisoformat(backup["stopped"])
                      for backup in backups if backup["type"] in stronger), default=None)
        if newest is None:
            problems.append(f"there is no {kind} backup yet: take one with "
                            f"salt-run state.orchestrate orch.backup pillar='{{\"type\": \"{kind}\"}}'")
        elif (now - newest).total_seconds() > allowed:
            problems.append(
                f"the newest {kind} backup is {_hours(now - newest)} old, its schedule allows "
                f"{_hours(datetime.timedelta(seconds=allowed))}: see `journalctl -u "
                f"airflow-backup@{kind}` on the backup node, then take one with orch.backup")
    return problems


def _hours(delta):
    return f"{delta.total_seconds() / 3600:.1f} h"


def archive_problems(archiver, node, lag_limit_seconds, stanza):
    """
    Return the problems of the primary's WAL archiving from its
    ``archiver`` state (``pg_backup.archive_state``): WAL waiting longer
    than ``lag_limit_seconds`` to be archived (``stanza`` names the
    command that checks it).
    """
    oldest = archiver.get("oldest_ready_seconds")
    if oldest is None or oldest <= lag_limit_seconds:
        return []
    failure = ""
    if archiver.get("last_failed_wal"):
        failure = (f", and archiving {archiver['last_failed_wal']} last failed at "
                   f"{archiver['last_failed_time']}")
    return [f"{archiver['ready_count']} WAL file(s) on {node} wait to be archived, the oldest "
            f"for {oldest:.0f} s{failure}: the backups cannot restore past them; see "
            f"PostgreSQL's log on {node}, and run `pgbackrest --stanza={stanza} check` there as postgres"]


def disaster_refusal(node, database_nodes, states, kept_backups):
    """
    Return why ``orch.disaster_recovery`` must not restore ``node`` as the
    primary (None: it may). Every database server must answer (a rebuilt
    one too: its minion accepted), none may run as a primary (then the
    cluster is not lost, and a restore would fork it), and the repository
    must hold a backup.

    states
        ``{node: pg_replication.status, or why it did not answer (a string)}``
        of every database node.
    kept_backups
        The repository's backups (``pg_backup.info``'s ``backups``).
    """
    if node not in database_nodes:
        return (f"{node} is not a database node: give node as one of "
                f"{', '.join(database_nodes)}")
    silent = sorted(name for name, state in states.items() if isinstance(state, str))
    if silent:
        return (f"{', '.join(silent)} did not answer ({'; '.join(states[n] for n in silent)}): "
                "boot or rebuild it and accept its minion's key, then run again")
    primaries = sorted(name for name, state in states.items() if state.get("role") == "primary")
    if primaries:
        return (f"PostgreSQL on {', '.join(primaries)} runs as a primary: the cluster is not "
                "lost. Use orch.failover or orch.failback, or orch.restore for a copy beside "
                "it; to restore over it all the same, stop it first (salt NODE "
                "pg_replication.stop)")
    if not kept_backups:
        return "the repository holds no backup: there is nothing to restore from"
    return None

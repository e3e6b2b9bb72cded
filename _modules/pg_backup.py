"""
Back up and restore the Airflow database with pgBackRest: the repository's
backups and their schedule (on the node with the backup role), the WAL
archive's state (on the primary), a backup taken now, and a restore to a
point in time into a scratch directory that runs beside the live server
(on a database server), without touching the running pair.

:configuration: Settings are read with ``config.get`` under the key
    ``pg_backup``: salt/pgbackrest/module_settings.sls writes them as a
    grain from the pgbackrest component's defaults and the pillar, so they
    are in one place (salt/pgbackrest/defaults.yaml). Every function
    refuses, naming the fix, on a node where the states have not run.

    pgBackRest finds its repository and the database servers in its own
    configuration (``/etc/pgbackrest/pgbackrest.conf``). Every program runs
    as ``os_user``; SQL goes on psql's standard input.
"""

import datetime
import glob
import json
import logging
import os
import pwd
import re
import shutil
from time import monotonic, sleep

import salt.utils.path
from salt.exceptions import CommandExecutionError

from ha_core import backups, errors, pg_commands, pg_datadir, pg_facts

log = logging.getLogger(__name__)

__virtualname__ = "pg_backup"

_POLL_SECONDS = 0.5
# What a restored Airflow database holds: its DAG runs and the newest.
_AIRFLOW_RUNS_SQL = """
    SELECT CASE WHEN to_regclass('dag_run') IS NULL THEN json_build_object('dag_runs', 0)
           ELSE (SELECT json_build_object('dag_runs', count(*), 'newest_dag_run', max(start_date))
                 FROM dag_run) END
"""
_RESTORE_POINT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,63}")


def __virtual__():
    """
    Only load where pgBackRest is installed.
    """
    if not salt.utils.path.which("pgbackrest"):
        return (False, "pg_backup: pgbackrest is not installed; the pgbackrest states install "
                       "it on the nodes with the backup and postgresql roles")
    return __virtualname__


def _settings():
    settings = __salt__["config.get"]("pg_backup")
    if not settings:
        raise errors.Refused(
            "this node has no pg_backup settings (the grain the pgbackrest states write)",
            fix="apply the highstate to this node: it needs the postgresql or backup role, "
                "and a node with the backup role in cluster:nodes")
    return settings



def _run(settings, args, stdin=None, timeout=None, env=None):
    """Run a program as the OS user; return cmd.run_all's result."""
    return __salt__["cmd.run_all"](
        args, stdin=stdin, runas=settings["os_user"], cwd="/", python_shell=False,
        env=dict({"LC_ALL": "C"}, **(env or {})), ignore_retcode=True, timeout=timeout,
        output_loglevel="quiet",
    )


def _checked(result, what, fix=None):
    if result["retcode"] != 0:
        raise errors.OperationFailed(f"{what}: {(result['stderr'] or result['stdout']).strip()}",
                                     fix=fix)
    return result["stdout"]


def _pgbackrest(settings, *args, timeout=None):
    return _run(settings, ["pgbackrest", f"--stanza={settings['stanza']}", *args], timeout=timeout)


def _sql(settings, sql, port=None, database="postgres"):
    """Run SQL on a local server over its unix socket as the OS user."""
    conninfo = pg_facts.format_conninfo({"host": settings["socket_dir"],
                                         "port": port or settings["port"], "dbname": database})
    return _checked(_run(settings, pg_commands.psql_args(
        os.path.join(settings["bin_dir"], "psql"), conninfo), stdin=sql),
        f"SQL on the server at port {port or settings['port']} failed").strip()


@errors.reported_as(CommandExecutionError)
def info():
    """
    Return the repository's view of the stanza: its ``status`` ("ok" when
    usable), its ``backups`` (oldest first: ``label``, ``type``,
    ``started``, ``stopped``, ``seconds``, ``database_bytes``,
    ``backup_bytes``, ``repository_bytes``, ``wal_start``, ``wal_stop``)
    and the WAL ``archive`` kept (``min``, ``max``).

    CLI Example:

    .. code-block:: bash

        salt airflow-backup1 pg_backup.info
    """
    settings = _settings()
    output = _checked(_pgbackrest(settings, "info", "--output=json"),
                      "pgbackrest info failed", fix="see /var/log/pgbackrest")
    return backups.summarize_info(json.loads(output), settings["stanza"])


@errors.reported_as(CommandExecutionError)
def check():
    """
    Check the stanza end to end (pgBackRest's ``check``): the repository
    and the database servers are reachable, and the primary's WAL reaches
    the archive (it switches to a new WAL segment and waits for it there).
    Returns ``ok`` and the ``seconds`` it took.

    CLI Example:

    .. code-block:: bash

        salt airflow-backup1 pg_backup.check
    """
    started = monotonic()
    _checked(_pgbackrest(_settings(), "check"), "pgbackrest check failed",
             fix="see /var/log/pgbackrest on this node and PostgreSQL's log on the primary")
    return {"ok": True, "seconds": round(monotonic() - started, 1)}


def _start_unit(unit, wait):
    """Start a oneshot unit and wait for it to end; its journal's last
    lines when it failed, else None."""
    result = __salt__["cmd.run_all"](["systemctl", "start", unit], python_shell=False,
                                     ignore_retcode=True, timeout=wait)
    if result["retcode"] == 0:
        return None
    return __salt__["cmd.run"](["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"],
                               python_shell=False)


@errors.reported_as(CommandExecutionError, CommandExecutionError)
def backup(type="incr", wait=None):
    """
    Take a backup of ``type`` (full, diff or incr) now, then copy the Redis
    broker's data, as the schedule's units do (``airflow-backup@TYPE``,
    which waits for a backup already running, then
    ``airflow-redis-copy@TYPE``). Returns the new backup, as in ``info``,
    with ``redis_copy``: the newest copy of the broker's data (``path``,
    ``bytes``, ``written``), or the ``failed`` copy unit and its
    ``journal``'s last lines (the database's backup stands).

    CLI Example:

    .. code-block:: bash

        salt airflow-backup1 pg_backup.backup type=full
    """
    if type not in backups.BACKUP_TYPES:
        raise errors.InvalidInput(f"unknown backup type {type!r}",
                                  fix="give one of " + ", ".join(backups.BACKUP_TYPES))
    settings = _settings()
    unit = f"airflow-backup@{type}.service"
    before = {entry["label"] for entry in info()["backups"]}
    journal = _start_unit(unit, wait)
    if journal is not None:
        raise errors.OperationFailed(f"{unit} failed", now=f"its journal ends:\n{journal}")
    new = [entry for entry in info()["backups"] if entry["label"] not in before]
    if not new:
        raise errors.OperationFailed(f"{unit} ended, but the repository shows no new backup")
    # Already started by the backup's unit: this waits for it to end.
    copy_unit = f"airflow-redis-copy@{type}.service"
    journal = _start_unit(copy_unit, wait)
    copy = ({"failed": copy_unit, "journal": journal} if journal is not None
            else _newest_redis_copy(settings))
    return dict(new[-1], redis_copy=copy)


def _allowed_seconds(settings):
    """The longest each scheduled type's newest backup may be old: the
    longest gap between two runs of its calendar, plus the grace."""
    allowed = {}
    for kind in backups.BACKUP_TYPES:
        calendar = (settings["schedule"] or {}).get(kind)
        if not calendar:
            continue
        output = _checked(__salt__["cmd.run_all"](
            ["systemd-analyze", "calendar", "--iterations=12", calendar], python_shell=False,
            env={"TZ": "UTC", "LC_ALL": "C"}, ignore_retcode=True),
            f"systemd-analyze cannot read the {kind} schedule {calendar!r}")
        gap = backups.longest_gap(backups.parse_calendar_elapses(output))
        if gap is not None:
            allowed[kind] = gap + settings["grace_hours"] * 3600
    return allowed


def _newest_redis_copy(settings):
    copies = sorted(glob.glob(os.path.join(settings["redis_copy_dir"], "dump-*.rdb")))
    if not copies:
        return None
    stat = os.stat(copies[-1])
    return {"path": copies[-1], "bytes": stat.st_size,
            "written": datetime.datetime.fromtimestamp(stat.st_mtime,
                                                       datetime.timezone.utc).isoformat()}


def _failed_units():
    """The backup and copy units whose last run failed."""
    output = __salt__["cmd.run"](
        ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--all",
         "airflow-backup@*", "airflow-redis-copy@*"], python_shell=False, ignore_retcode=True)
    return [line.split()[0] for line in output.splitlines() if line.strip()]


@errors.reported_as(CommandExecutionError)
def status():
    """
    Return ``info``'s fields, with ``allowed_seconds`` (how old each
    scheduled type's newest backup may be), ``problems`` (a type whose
    newest backup is older than that, a stanza that is not ok, a backup or
    copy unit whose last run failed) and
    ``redis_copy`` (the newest copy of the broker's data: ``path``,
    ``bytes``, ``written``). On the node with the backup role.

    CLI Example:

    .. code-block:: bash

        salt airflow-backup1 pg_backup.status
    """
    settings = _settings()
    state = info()
    allowed = _allowed_seconds(settings)
    problems = [] if state["status"] == "ok" else [f"the backup stanza: {state['status']}"]
    problems += backups.backup_problems(state["backups"], allowed,
                                       datetime.datetime.now(datetime.timezone.utc))
    problems += [f"{unit} failed on its last run: see `journalctl -u {unit}` on "
                 f"{__grains__['id']}" for unit in _failed_units()]
    return dict(state, allowed_seconds=allowed, problems=problems,
                redis_copy=_newest_redis_copy(settings))


@errors.reported_as(CommandExecutionError)
def archive_state():
    """
    Return the WAL archiving of this node's server, which must be the
    primary: ``ready_count`` (WAL segments waiting to be archived),
    ``oldest_ready_seconds`` (how long the oldest has waited, or None),
    and pg_stat_archiver's ``last_archived_wal``, ``last_archived_time``,
    ``failed_count``, ``last_failed_wal`` and ``last_failed_time``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_backup.archive_state
    """
    output = _sql(_settings(), """
        SELECT json_build_object(
          'ready_count', count(s.name),
          'oldest_ready_seconds', extract(epoch FROM now() - min(s.modification)),
          'last_archived_wal', a.last_archived_wal, 'last_archived_time', a.last_archived_time,
          'failed_count', a.failed_count, 'last_failed_wal', a.last_failed_wal,
          'last_failed_time', a.last_failed_time)
        FROM pg_stat_archiver a
        LEFT JOIN pg_ls_archive_statusdir() s ON s.name LIKE '%.ready'
        GROUP BY a.last_archived_wal, a.last_archived_time, a.failed_count,
                 a.last_failed_wal, a.last_failed_time
    """)
    return json.loads(output)


@errors.reported_as(CommandExecutionError, CommandExecutionError)
def restore_point(name):
    """
    Create a named restore point on this node's server (the primary): a
    target that ``restore`` can stop at (``restore_point=NAME``). Returns
    its ``name`` and ``lsn``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_backup.restore_point before-upgrade
    """
    if not _RESTORE_POINT_NAME.fullmatch(str(name)):
        raise errors.InvalidInput(f"restore point name {name!r} is not usable",
                                  fix="use 1 to 63 letters, digits, '_', '.', ':' or '-'")
    lsn = _sql(_settings(), f"SELECT pg_create_restore_point('{name}')")
    return {"name": name, "lsn": lsn}


def _restored_config(settings, directory, port):
    """The restored copy's postgresql.conf: the live server's settings
    (recovery needs limits at least as high as the backed-up server's),
    then what keeps the copy apart from it: its own directory, port, name
    and socket only, and no archiving."""
    return "\n".join([
        "# Written by pg_backup.restore: a restored copy, apart from the live server.",
        f"include '{settings['conf_dir']}/postgresql.conf'",
        f"data_directory = '{directory}'",
        f"hba_file = '{directory}/pg_hba.conf'",
        f"ident_file = '{directory}/pg_ident.conf'",
        "external_pid_file = ''",
        f"port = {int(port)}",
        "listen_addresses = ''",
        f"unix_socket_directories = '{settings['socket_dir']}'",
        "cluster_name = 'airflow-restore'",
        "archive_mode = off",
        "hot_standby = on",
        "",
    ])


def _write(path, text, uid, gid, mode=0o600):
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _recovered_to(log_text):
    """What the restored copy's log says about where recovery stopped."""
    for pattern in (r"recovery stopping [^\n]*", r"last completed transaction was at log time [^\n]*",
                    r"redo done at [^\n]*"):
        found = re.findall(pattern, log_text)
        if found:
            return found[-1]
    return None


def _restored_report(settings, port, directory):
    report = json.loads(_sql(settings, """
        SELECT json_build_object(
          'in_recovery', pg_is_in_recovery(),
          'timeline', (SELECT timeline_id FROM pg_control_checkpoint()),
          'databases', (SELECT json_object_agg(datname, pg_database_size(datname))
                        FROM pg_database WHERE NOT datistemplate))
    """, port=port))
    if settings["database"] in report["databases"]:
        report["airflow"] = json.loads(_sql(settings, _AIRFLOW_RUNS_SQL, port=port,
                                            database=settings["database"]))
    log_path = os.path.join(directory, "restore.log")
    with open(log_path, encoding="utf-8", errors="replace") as stream:
        report["recovered_to"] = _recovered_to(stream.read())
    return dict(report, directory=directory, port=int(port), log=log_path)


@errors.reported_as(CommandExecutionError, CommandExecutionError)
def restore(target="latest", time=None, restore_point=None, backup_set=None, directory=None,
            port=None, wait=3600):
    """
    Restore the stanza from the repository into a new scratch ``directory``
    (default: a directory named after the time, under ``restore_directory``)
    and start it on ``port`` (default ``restore_port``; unix socket only),
    stopping at the target: the end of the archive (``target=latest``), a
    ``time`` (ISO 8601 with its UTC offset) or a named ``restore_point``.
    It starts from ``backup_set`` (a backup's label) when given; else
    pgBackRest takes the newest backup (for a time, the newest before it),
    and for a restore point, whose time the archive does not tell, the
    oldest backup kept, replaying WAL from there.
    The copy is promoted there and left running; the live server and its
    data are not touched. Returns what it holds: ``databases`` and their
    sizes, the Airflow database's ``dag_runs`` and ``newest_dag_run``,
    ``timeline``, ``recovered_to`` (from its log), ``backup_set``,
    ``seconds``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 pg_backup.restore time='2026-12-02 04:31:00+00:00'
        salt airflow-server2 pg_backup.restore restore_point=before-upgrade
    """
    settings = _settings()
    options, backup_set = _restore_options(target, time, restore_point, backup_set)
    port = int(port or settings["restore_port"])
    if port == int(settings["port"]):
        raise errors.InvalidInput(f"port {port} is the live server's",
                                  fix="give the restored copy a port of its own")
    directory = directory or os.path.join(
        settings["restore_directory"],
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    if os.path.exists(directory) and os.listdir(directory):
        raise errors.Refused(f"{directory} exists and is not empty",
                             fix="give a new directory, or remove that one with "
                                 "pg_backup.drop_restored")
    user = pwd.getpwnam(settings["os_user"])
    for owned in (settings["restore_directory"], directory):
        os.makedirs(owned, mode=0o700, exist_ok=True)
        os.chown(owned, user.pw_uid, user.pw_gid)
    started = monotonic()
    _checked(_pgbackrest(settings, "restore", f"--pg1-path={directory}", "--archive-mode=off",
                         *options, timeout=wait),
             f"pgbackrest restore into {directory} failed", fix="see /var/log/pgbackrest")
    _write(os.path.join(directory, "postgresql.conf"),
           _restored_config(settings, directory, port), user.pw_uid, user.pw_gid)
    _write(os.path.join(directory, "pg_hba.conf"),
           f"local all {settings['os_user']} peer\n", user.pw_uid, user.pw_gid)
    _write(os.path.join(directory, "pg_ident.conf"), "", user.pw_uid, user.pw_gid)
    log_path = os.path.join(directory, "restore.log")
    _checked(_run(settings, pg_commands.pg_ctl_start_args(
        os.path.join(settings["bin_dir"], "pg_ctl"), directory, log_path, seconds=int(wait))),
        f"the restored copy in {directory} did not start", fix=f"see {log_path}")
    while _sql(settings, "SELECT pg_is_in_recovery()", port=port) == "t":
        if monotonic() - started > wait:
            raise errors.OperationFailed(
                f"the restored copy in {directory} is still recovering after {wait} s",
                fix=f"see {log_path}; its target may lie past the end of the archive")
        sleep(_POLL_SECONDS)
    report = _restored_report(settings, port, directory)
    report["seconds"] = round(monotonic() - started, 1)
    report["backup_set"] = _chosen(backup_set, time)
    return report


def _restore_options(target, time, restore_point, backup_set):
    """pgBackRest's restore options for the target, and the backup set
    (None: pgBackRest's choice). A restore point's time is not in the
    archive: without a backup set, it restores from the oldest backup kept."""
    options = backups.restore_target(target, time, restore_point)
    if restore_point and not backup_set:
        kept = info()["backups"]
        backup_set = kept[0]["label"] if kept else None
    if backup_set:
        options.append(f"--set={backup_set}")
    return options, backup_set


def _chosen(backup_set, time):
    return backup_set or "pgBackRest's choice (" + (
        "the newest before the time)" if time else "the newest)")


@errors.reported_as(CommandExecutionError, CommandExecutionError)
def restore_server(generation, target="latest", time=None, restore_point=None, backup_set=None,
                   wait=3600):
    """
    Disaster recovery: restore the stanza into this server's own data
    directory and make it the primary, on a new timeline, archiving it: the
    step of ``orch.disaster_recovery`` on the node the topology record
    names. The target and backup are chosen as for ``restore``. PostgreSQL
    must be stopped here; whatever the data directory held is kept beside
    it, in ``<data_dir>.before-restore-<UTC time>``. The restored directory
    is fenced, then released as ``pg_replication.release`` releases a node
    for ``generation`` (the record's, which this node's copy must have):
    started through its service, writable once recovery reaches the
    target. Returns ``kept`` (that path, or None when it was empty),
    ``backup_set``, ``timeline``, the Airflow database's ``dag_runs`` and
    ``newest_dag_run``, and ``seconds``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_backup.restore_server generation=7
        salt airflow-server1 pg_backup.restore_server generation=7 time='2026-12-02 04:31:00+00:00'
    """
    settings = _settings()
    options, backup_set = _restore_options(target, time, restore_point, backup_set)
    service, data_dir = settings["service"], os.path.normpath(settings["data_dir"])
    if __salt__["service.status"](service):
        raise errors.Refused(f"PostgreSQL runs on {__grains__['id']} ({service})",
                             now="nothing was changed",
                             fix="a restore replaces a stopped server only: stop it first "
                                 "(pg_replication.stop), or use orch.restore for a copy beside it")
    started = monotonic()
    user = pwd.getpwnam(settings["os_user"])
    kept = None
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        kept = f"{data_dir}.before-restore-" + datetime.datetime.now(
            datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        os.rename(data_dir, kept)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    _checked(_pgbackrest(settings, "restore", f"--pg1-path={data_dir}", *options, timeout=wait),
             f"pgbackrest restore into {data_dir} failed",
             fix="see /var/log/pgbackrest" + (f"; the data directory before is in {kept}"
                                               if kept else ""))
    # Restored, the server is fenced, so that no start but the release
    # below makes it a primary (a reboot before it starts it fenced).
    pg_datadir.write_fence(data_dir, "restored by pg_backup.restore_server", user.pw_uid,
                           user.pw_gid)
    __salt__["pg_replication.release"](generation=generation, wait=wait)
    airflow = json.loads(_sql(settings, _AIRFLOW_RUNS_SQL, database=settings["database"]))
    return dict(airflow, kept=kept, backup_set=_chosen(backup_set, time),
                timeline=int(_sql(settings, "SELECT timeline_id FROM pg_control_checkpoint()")),
                seconds=round(monotonic() - started, 1))


@errors.reported_as(CommandExecutionError, CommandExecutionError)
def restored_sql(sql, database="postgres", port=None):
    """
    Run SQL on the restored copy (on ``port``, default ``restore_port``)
    and return psql's unaligned output, to look into what it holds.

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 pg_backup.restored_sql 'SELECT count(*) FROM dag_run' database=airflow
    """
    settings = _settings()
    return _sql(settings, sql, port=port or settings["restore_port"], database=database)


@errors.reported_as(CommandExecutionError, CommandExecutionError)
def drop_restored(directory):
    """
    Stop a restored copy and remove its ``directory`` (one under
    ``restore_directory`` only).

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 pg_backup.drop_restored /var/lib/pgbackrest-restore/20261202T043100Z
    """
    settings = _settings()
    parent = os.path.realpath(settings["restore_directory"])
    if os.path.dirname(os.path.realpath(directory)) != parent:
        raise errors.InvalidInput(f"{directory} is not a restored copy's directory",
                                  fix=f"give a directory directly under {parent}")
    if os.path.exists(os.path.join(directory, "postmaster.pid")):
        _checked(_run(settings, [os.path.join(settings["bin_dir"], "pg_ctl"), "stop", "-w",
                                 "-m", "fast", "-D", directory]),
                 f"the restored copy in {directory} did not stop")
    shutil.rmtree(directory, ignore_errors=True)
    return {"removed": directory}

"""
Operate PostgreSQL streaming replication: status, promotion, fencing, and
rejoining a former primary as a standby (pg_rewind or base backup), which
discards the WAL it holds past the point where the primary's history left its
own only with the operator's consent, and keeps a copy of it.

Works on a primary, on a warm standby (``hot_standby = off``, which accepts no
SQL: its state is read from ``pg_controldata``, its files and the titles of its
processes) and on a stopped node.

:configuration: Settings are read with ``config.get`` (minion options, grains
    or pillar) under the key ``pg_replication``; every key is optional:

    .. code-block:: yaml

        pg_replication:
          bin_dir: /usr/lib/postgresql/15/bin
          data_dir: /var/lib/postgresql/15/main
          conf_dir: /etc/postgresql/15/main    # where postgresql.conf is, if not in data_dir
          service: postgresql@15-main          # start and stop through the service manager
          port: 5432
          socket_dir: /var/run/postgresql
          os_user: postgres
          replication_user: replicator
          passfile: /var/lib/postgresql/.pgpass_replication
          node_name: airflow-server1           # default: the minion id

    The local server is reached over its unix socket as ``os_user`` (peer
    authentication). Other nodes are reached as ``replication_user``, whose
    password comes from the libpq password file ``passfile`` (or ``os_user``'s
    ``~/.pgpass``); passwords never appear on a command line, in a log or in
    return data.

    ``node_name`` is this node's ``application_name`` on the primary; its
    replication slot there is ``node_name`` in lower case with every character
    outside ``[a-z0-9_]`` replaced by ``_``.

    The replication user needs ``REPLICATION`` and ``LOGIN``, membership of
    ``pg_monitor``, and, for pg_rewind, ``EXECUTE`` on ``pg_ls_dir(text,
    boolean, boolean)``, ``pg_stat_file(text, boolean)``,
    ``pg_read_binary_file(text)`` and ``pg_read_binary_file(text, bigint,
    bigint, boolean)``; ``pg_hba.conf`` must let it connect to the
    ``replication`` and ``postgres`` databases. Rewinding needs
    ``wal_log_hints = on`` or data checksums; without them a rejoin takes a
    base backup.
"""

import contextlib
import functools
import json
import logging
import os
import pwd
import time

from salt.exceptions import CommandExecutionError

from ha_core import addresses, errors, pg_commands, pg_datadir, pg_decisions, pg_facts

log = logging.getLogger(__name__)

__virtualname__ = "pg_replication"

# pg_ctl's own default; a fast shutdown that takes longer is finished off with
# an immediate one.
_STOP_SECONDS = 60
_START_SECONDS = 60
_POLL_SECONDS = 0.1


def __virtual__():
    """
    Only load when the PostgreSQL server programs are in ``bin_dir``.
    """
    bin_dir = _settings()["bin_dir"]
    if not os.access(os.path.join(bin_dir, "pg_controldata"), os.X_OK):
        return (
            False,
            f"pg_replication: pg_controldata not found in {bin_dir}; install the "
            "PostgreSQL server package or set pg_replication:bin_dir",
        )
    return __virtualname__


def _settings():
    return pg_facts.settings(__salt__["config.get"]("pg_replication", {}), __grains__["id"])


def _os_user_ids(settings):
    user = pwd.getpwnam(settings["os_user"])
    return user.pw_uid, user.pw_gid


def _run(settings, program, *args, stdin=None, timeout=None, quiet=False):
    """Run a program of bin_dir as the OS user; return cmd.run_all's result."""
    env = {"LC_ALL": "C"}  # we parse the programs' English output
    if settings["passfile"]:
        env["PGPASSFILE"] = settings["passfile"]
    # stdin_raw_newlines: otherwise Salt turns each backslash-n in the input
    # (in a password, say) into a newline.
    return __salt__["cmd.run_all"](
        [os.path.join(settings["bin_dir"], program), *args],
        stdin=stdin, stdin_raw_newlines=True, runas=settings["os_user"], env=env, cwd="/",
        python_shell=False,
        ignore_retcode=True, timeout=timeout, output_loglevel="quiet" if quiet else "debug",
    )


def _output_of(result):
    return (result["stderr"] or result["stdout"]).strip()


def _checked(result, what, kind=errors.OperationFailed, **parts):
    """Return a program's output; raise ``kind`` "what: its error" if it failed."""
    if result["retcode"] != 0:
        raise kind(f"{what}: {_output_of(result)}", **parts)
    return result["stdout"].strip()


def _controldata(settings):
    result = _run(settings, "pg_controldata", "-D", settings["data_dir"])
    return pg_facts.parse_controldata(_checked(
        result, f"pg_controldata could not read {settings['data_dir']}",
        fix="check pg_replication:data_dir",
    ))


def _local_sql(settings, sql):
    """Run SQL on the local server over its unix socket; return psql's output."""
    conninfo = pg_facts.format_conninfo(
        {"host": settings["socket_dir"], "port": settings["port"], "dbname": "postgres"}
    )
    # Quiet: what the SQL returns may be a password verifier.
    result = _run(settings, *pg_commands.psql_args("psql", conninfo), stdin=sql, quiet=True)
    return _checked(
        result, f"SQL on the local server (socket {settings['socket_dir']}, "
        f"port {settings['port']}) failed",
        fix=f"check that it runs and that {settings['os_user']} may connect locally "
        "(peer authentication)",
    )


def _remote_conninfo(settings, host, port, replication=False):
    return pg_facts.format_conninfo({
        "host": host, "port": port, "user": settings["replication_user"], "dbname": "postgres",
        "replication": "true" if replication else None,
    })


def _remote_sql(settings, host, port, sql, replication=False):
    """Run SQL (or a replication command) on another node as the replication user."""
    conninfo = _remote_conninfo(settings, host, port, replication)
    result = _run(settings, *pg_commands.psql_args("psql", conninfo), stdin=sql, timeout=60)
    return _checked(
        result, f"{sql.split()[0]} on {addresses.join(host, port)} as "
        f"{settings['replication_user']} failed", kind=errors.Unreachable,
        fix="check the address, pg_hba.conf on that node, the password file "
        "(pg_replication:passfile) and the user's privileges",
    )


def _identify_system(settings, host, port):
    return pg_facts.parse_identify_system(
        _remote_sql(settings, host, port, "IDENTIFY_SYSTEM", replication=True)
    )


def _log_file(settings):
    return os.path.normpath(settings["data_dir"]) + ".log"


def _log_tail(settings):
    """The end of pg_ctl start's log, as an error's "where things stand", or None."""
    text = pg_datadir.read_text(_log_file(settings)) if not settings["service"] else None
    return text and "last lines of its log:\n" + "\n".join(text.splitlines()[-10:])


def _start_service(service):
    """Start PostgreSQL's unit; why it failed, or None."""
    try:
        return None if __salt__["service.start"](service) else "it did not start"
    except CommandExecutionError as error:
        return str(error)


def _start(settings):
    service = settings["service"]
    if service:
        failure = _start_service(service)
        if failure:
            # systemd in a container on the legacy cgroup hierarchy (the
            # lab's nodes) can fail a start right after a stop (219/CGROUP,
            # before the start guard runs); it starts once the failure is reset.
            __salt__["cmd.run"](["systemctl", "reset-failed", service], python_shell=False)
            failure = _start_service(service)
        if failure:
            raise errors.OperationFailed(f"service {service} did not start: {failure}",
                                         fix="see its journal")
        return
    result = _run(settings, *pg_commands.pg_ctl_start_args(
        "pg_ctl", settings["data_dir"], _log_file(settings), settings["conf_dir"], _START_SECONDS
    ))
    if result["retcode"] != 0:
        raise errors.OperationFailed(
            f"PostgreSQL on {settings['data_dir']} did not start: {_output_of(result)}",
            now=_log_tail(settings),
        )


def _stop(settings):
    """Stop the local server (fast, immediate if that fails); return whether it ran."""
    if pg_datadir.postmaster_pid(settings["data_dir"]) is None:
        return False
    if settings["service"] and __salt__["service.stop"](settings["service"]):
        return True
    for mode in ("fast", "immediate"):
        result = _run(settings, "pg_ctl", "stop", "-w", "-t", str(_STOP_SECONDS), "-m", mode,
                      "-D", settings["data_dir"])
        if result["retcode"] == 0 or pg_datadir.postmaster_pid(settings["data_dir"]) is None:
            return True
        log.warning("pg_replication: %s shutdown failed: %s", mode, _output_of(result))
    raise errors.OperationFailed(
        f"PostgreSQL on {settings['data_dir']} did not stop, even with an immediate shutdown: "
        f"{_output_of(result)}",
        fix="stop it by hand (kill the postmaster)",
    )


def _primary_status(settings):
    return pg_facts.parse_primary_status(_local_sql(settings, pg_commands.PRIMARY_STATUS_SQL))


def _waldump(settings, names, timeline, start_lsn, segment_size):
    """
    pg_waldump from start_lsn on timeline to the end of its WAL, given the
    names of the files in pg_wal; None when none of them is the segment to
    start in. It is given the segment files to start and stop in: without a
    start file it takes the segment size from whichever WAL file it lists
    first, and a recycled, zero-filled one makes it fail; with a start file
    alone it stops at that file's end.
    """
    pg_wal = os.path.join(settings["data_dir"], "pg_wal")
    first = pg_facts.wal_file_name(timeline, start_lsn, segment_size)
    if first not in names:
        return None
    last = max(name for name in names if name[:8] == first[:8] and len(name) == len(first))
    return _run(settings, "pg_waldump", "--quiet", "--start", pg_facts.format_lsn(start_lsn),
                os.path.join(pg_wal, first), os.path.join(pg_wal, last))


def _last_local_record(settings, segment_size, timeline, start_lsn):
    """
    Where the last complete record in this node's pg_wal begins, reading from
    start_lsn on timeline; None when pg_wal has not the segment to start in:
    a standby restoring it from the archive names it in its startup
    process's title before it is there.
    """
    result = _waldump(settings, pg_datadir.wal_file_names(settings["data_dir"]), timeline,
                      start_lsn, segment_size)
    return None if result is None else pg_facts.parse_waldump_last_record(result["stderr"])


def _wal_end(settings, control):
    """
    Return this node's newest timeline and where its WAL ends on it (an
    integer: the position after its last record), as pg_waldump finds it,
    reading from the latest checkpoint, or from where that timeline begins
    when the node's WAL went on past the checkpoint's timeline (a standby that
    followed a promotion). After a clean shutdown that is the end of the
    shutdown checkpoint; after a crash, wherever the WAL stops.
    """
    data_dir = settings["data_dir"]
    pg_wal = os.path.join(data_dir, "pg_wal")
    names = pg_datadir.wal_file_names(data_dir)
    segment_size = int(control["Bytes per WAL segment"])
    checkpoint_timeline = int(control["Latest checkpoint's TimeLineID"])
    timeline = max(checkpoint_timeline, pg_facts.newest_wal_timeline(names) or 0)
    history = (pg_datadir.timeline_history(data_dir, timeline)
               if timeline != checkpoint_timeline else None)
    if timeline == checkpoint_timeline:
        start = pg_facts.parse_lsn(control["Latest checkpoint location"])
    elif history:
        start = history[-1][1]  # where this timeline begins
    else:
        start = min(pg_facts.wal_file_start(name, segment_size)[1] for name in names
                    if name[:8] == f"{timeline:08X}" and len(name) == 24)
    result = _waldump(settings, names, timeline, start, segment_size)
    if result is None:
        raise errors.OperationFailed(
            f"{pg_wal} has no {pg_facts.wal_file_name(timeline, start, segment_size)}, where "
            f"{settings['node_name']}'s WAL on timeline {timeline} is to be read from "
            f"({pg_facts.format_lsn(start)})",
            now="nothing was changed", fix=f"check {data_dir}",
        )
    end = pg_facts.parse_waldump_end(result["stderr"], segment_size)
    if end is None:
        raise errors.OperationFailed(
            f"could not tell where {settings['node_name']}'s WAL ends: pg_waldump on "
            f"timeline {timeline} from {pg_facts.format_lsn(start)}: {_output_of(result)}",
            now="nothing was changed", fix=f"check {pg_wal}",
        )
    return timeline, end


def _status(settings):
    data_dir = settings["data_dir"]
    if not pg_datadir.holds_cluster(data_dir):
        return pg_datadir.node_status(settings["node_name"], "stopped", False, {}, data_dir)
    control = _controldata(settings)
    postmaster_pid = pg_datadir.postmaster_pid(data_dir)
    running = postmaster_pid is not None
    standby_signal = os.path.exists(os.path.join(data_dir, pg_datadir.STANDBY_SIGNAL))
    role = pg_decisions.server_role(running, control.get("Database cluster state"), standby_signal)
    server = None
    if role == "primary":
        server = _primary_status(settings)
    elif role == "standby":
        server = pg_facts.standby_progress(pg_datadir.child_titles(postmaster_pid), control,
                                           functools.partial(_last_local_record, settings,
                                                             int(control["Bytes per WAL segment"])))
    return pg_datadir.node_status(settings["node_name"], role, running, control, data_dir, server)


@errors.reported_as(CommandExecutionError)
def status():
    """
    Return this node's replication state. Works on a primary, on a standby
    (also a warm one, which accepts no SQL) and on a stopped node.

    Always: ``node_name``, ``checked_at`` (UTC, ISO 8601), ``role`` (primary,
    standby or stopped), ``running``,
    ``timeline``, ``system_identifier``, ``cluster_state`` (from
    pg_controldata), ``last_checkpoint_lsn``, ``fenced`` and ``fence`` (the
    marker's ``fenced_at`` and ``reason``, or None), ``standby_of`` (``host``
    and ``port`` of primary_conninfo when standby.signal exists, else None).

    A primary adds ``current_lsn``, ``standbys`` (from pg_stat_replication:
    ``application_name``, ``client_addr``, ``state``, ``sent_lsn``,
    ``write_lsn``, ``flush_lsn``, ``replay_lsn``, ``lag_bytes`` behind the
    current LSN, ``lag_seconds`` of replay or None, ``sync_state``) and
    ``slots`` (``slot_name``, ``active``, ``restart_lsn``).

    A running standby adds ``wal_receiver`` (``status``: streaming, started
    when no WAL arrived since it started, or restarting; ``lsn``; None when no
    WAL receiver runs), ``received_lsn`` (the WAL receiver's position or, when
    it shows none, where the last complete record in pg_wal begins),
    ``replayed_lsn`` (a lower bound: the start of the segment being replayed or
    the minimum recovery point) and ``recovery`` (the startup process's
    ``activity`` and ``wal_file``).

    LSNs are strings such as ``"0/3000148"``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.status
    """
    return _status(_settings())


@errors.reported_as(CommandExecutionError)
def is_fenced():
    """
    Return True when this node is fenced (see fence) and not yet rejoined or
    promoted.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.is_fenced
    """
    return pg_datadir.read_fence(_settings()["data_dir"]) is not None


@errors.reported_as(CommandExecutionError)
def database_exists(name):
    """
    Return True when the running local server has a database called ``name``
    (a primary or a hot standby: a warm standby runs no SQL, and raises).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.database_exists airflow
    """
    literal = pg_commands.quote_literal(name)
    query = f"select count(*) from pg_database where datname = {literal}"
    return _local_sql(_settings(), query) == "1"


@errors.reported_as(CommandExecutionError)
def local_sql(sql):
    """
    Run SQL (one or more statements; psql stops at the first that fails) on
    the local server, over its unix socket as ``os_user``, and return psql's
    output, unaligned and without headers. The SQL goes to psql's standard
    input and the output is not logged: a password in the one or a verifier
    in the other shows on no command line and in no log.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.local_sql 'select pg_is_in_recovery()'
    """
    return _local_sql(_settings(), sql)


@errors.reported_as(CommandExecutionError)
def stop():
    """
    Stop PostgreSQL on this node (fast, immediate if that fails), through its
    service when ``pg_replication:service`` is set, without fencing it: it
    may start again as what it was.

    Returns ``stopped`` (True) and ``was_running``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 pg_replication.stop
    """
    return {"stopped": True, "was_running": _stop(_settings())}


@errors.reported_as(CommandExecutionError)
def release(generation, wait=60):
    """
    Let this fenced node start as the primary: what ``salt-run
    airflow_ha.unfence`` does on the node it picked, after start guards
    fenced it because they could not prove which node is the writer. Stops
    PostgreSQL, leaves a release for ``generation`` (the topology record's,
    which this node's copy must have; its start guard honours it once),
    removes standby.signal and the fence marker, starts it through its
    service and waits until it accepts writes. Refuses a node that is not
    fenced: a primary has nothing to release, and a standby follows one.

    generation
        The generation of the topology record that names this node.
    wait
        Seconds to wait for it to accept writes.

    Returns ``released`` (True), ``generation`` and ``seconds``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 pg_replication.release generation=4
    """
    settings = _settings()
    data_dir = settings["data_dir"]
    if pg_datadir.read_fence(data_dir) is None:
        raise errors.Refused(f"{settings['node_name']} is not fenced: there is nothing to release",
                             fix="check it with pg_replication.status")
    started = time.monotonic()
    _stop(settings)
    uid, gid = _os_user_ids(settings)
    pg_datadir.write_file(os.path.join(data_dir, pg_datadir.RELEASE),
                          json.dumps({"generation": int(generation)}) + "\n", uid, gid)
    # The marker goes last: until the signal file is gone, a start is fenced.
    for name in (pg_datadir.STANDBY_SIGNAL, pg_datadir.FENCE_MARKER):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(data_dir, name))
    _start(settings)
    while _local_sql_or_none(settings, "select pg_is_in_recovery()") != "f":
        if time.monotonic() > started + wait:
            raise errors.OperationFailed(
                f"{settings['node_name']} was released but does not accept writes after {wait} s",
                now=_log_tail(settings) or "its start guard may have fenced it again (see the "
                "journal of its service): the release is for another generation than its copy")
        time.sleep(_POLL_SECONDS)
    with contextlib.suppress(FileNotFoundError):  # used once, even without a start guard
        os.unlink(os.path.join(data_dir, pg_datadir.RELEASE))
    log.info("pg_replication: released %s (generation %s)", settings["node_name"], generation)
    return {"released": True, "generation": int(generation),
            "seconds": round(time.monotonic() - started, 3)}


def _local_sql_or_none(settings, sql):
    """Local SQL's output, or None while the server refuses connections."""
    try:
        return _local_sql(settings, sql)
    except errors.OperationFailed:
        return None


@errors.reported_as(CommandExecutionError)
def fence(reason=""):
    """
    Stop PostgreSQL here (fast shutdown, immediate if that fails) and keep it
    from coming back as a primary until it is rejoined (or promoted): any later
    start, by hand or by a highstate, comes up in recovery because
    standby.signal exists, and the marker ``pg_replication.fenced`` in the data
    directory records when and why. Safe to repeat; a node already fenced keeps
    its first marker.

    reason
        Why the node is fenced, kept in the marker.

    Returns ``fenced`` (True), ``was_running``, ``fenced_at`` and ``reason``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.fence reason='failover to airflow-server2'
    """
    settings = _settings()
    data_dir = settings["data_dir"]
    if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        raise errors.InvalidInput(
            f"{data_dir} is not a PostgreSQL data directory", fix="check pg_replication:data_dir"
        )
    # Signal file and marker come first, so that nothing can restart the
    # server as a primary between the stop and their creation.
    marker = pg_datadir.write_fence(data_dir, reason, *_os_user_ids(settings))
    log.info("pg_replication: fencing %s: %s", settings["node_name"], reason)
    return {"fenced": True, "was_running": _stop(settings), **marker}


def _primary_lag(settings, standby_of, received_lsn, primary_lsn):
    """Return whether the primary answers, and pg_facts.lag_bytes of this node."""
    reachable = False
    if standby_of:
        try:
            identity = _identify_system(settings, standby_of["host"], standby_of["port"])
        except errors.Unreachable as error:
            log.info("pg_replication: primary unreachable: %s", error)
        else:
            reachable = True
            primary_lsn = pg_facts.format_lsn(identity["flush_lsn"])
    return reachable, pg_facts.lag_bytes(primary_lsn, received_lsn)


@errors.reported_as(CommandExecutionError)
def promote(wait=60, max_lag_bytes=None, primary_lsn=None, force=False):
    """
    Promote this standby to primary and wait until it accepts writes. Refuses
    when the node is not a running standby, when it is fenced, or (with
    ``max_lag_bytes``) when its primary is unreachable and it is more than
    ``max_lag_bytes`` behind ``primary_lsn``. After promotion it checkpoints, so
    that its control file shows the new timeline (pg_rewind on a rejoining
    node reads it), and removes any fence marker.

    wait
        Seconds to wait for the promotion.
    max_lag_bytes
        Most WAL, in bytes, that may be lost when the primary is unreachable.
    primary_lsn
        The primary's last known LSN (for example ``current_lsn`` from its last
        status), used for the lag when it is unreachable.
    force
        Promote even when fenced or lagging.

    Returns ``promoted`` (True), ``timeline`` (the new one), ``switch_lsn``
    (where the new timeline begins), ``seconds`` (until writes were accepted)
    and, when checked, ``lag_bytes``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 pg_replication.promote
        salt airflow-server2 pg_replication.promote max_lag_bytes=1048576 primary_lsn=0/5000060
    """
    settings = _settings()
    state = _status(settings)
    reachable, lag_bytes = True, None
    if max_lag_bytes is not None and state["role"] == "standby":
        reachable, lag_bytes = _primary_lag(
            settings, state["standby_of"], state["received_lsn"], primary_lsn
        )
    blockers = pg_decisions.promotion_blockers(
        state["role"], state["fenced"], reachable, lag_bytes, max_lag_bytes, force
    )
    if blockers:
        raise errors.Refused(f"refusing to promote {settings['node_name']}: "
                             + "; ".join(blockers))
    started = time.monotonic()
    result = _run(settings, "pg_ctl", "promote", "-w", "-t", str(int(wait)),
                  "-D", settings["data_dir"])
    if result["retcode"] != 0:
        raise errors.OperationFailed(
            f"pg_ctl promote failed on {settings['data_dir']}: {_output_of(result)}",
            now=_log_tail(settings),
        )
    while True:
        try:
            if _local_sql(settings, "select pg_is_in_recovery()") == "f":
                break
        except errors.OperationFailed:
            pass  # connections are refused until the end of recovery
        if time.monotonic() > started + wait:
            raise errors.OperationFailed(
                f"{settings['node_name']} was promoted but does not accept writes after {wait} s",
                now=_log_tail(settings),
            )
        time.sleep(_POLL_SECONDS)
    seconds = time.monotonic() - started
    _local_sql(settings, "checkpoint")
    pg_datadir.remove_fence(settings["data_dir"])
    timeline = _primary_status(settings)["timeline"]
    promoted = {"promoted": True, "timeline": timeline,
                "switch_lsn": pg_datadir.timeline_start(settings["data_dir"], timeline),
                "seconds": round(seconds, 3)}
    if lag_bytes is not None:
        promoted["lag_bytes"] = lag_bytes
    log.info("pg_replication: promoted %s: %s", settings["node_name"], promoted)
    return promoted


def _check_control_timeline(settings, host, port, timeline):
    """
    pg_rewind reads the source's timeline from its control file, which shows
    a promotion only after the following checkpoint.
    """
    recorded = int(
        _remote_sql(settings, host, port, "select timeline_id from pg_control_checkpoint()")
    )
    if recorded != timeline:
        raise errors.Refused(
            f"the primary {addresses.join(host, port)} is on timeline {timeline} but its "
            f"control file still shows {recorded}",
            fix="run CHECKPOINT on it (pg_rewind reads the control file), then retry",
        )


def _base_backup(settings, host, port, slot, data_dir):
    result = _run(settings, "pg_basebackup", "-D", data_dir, "-X", "stream", "-S", slot, "-R",
                  "--checkpoint=fast", "-w", "-d", _remote_conninfo(settings, host, port))
    _checked(result, f"pg_basebackup from {addresses.join(host, port)} failed",
             now="the previous data directory was put back")


def _wait_for_streaming(settings, host, port, wait):
    """
    Wait until the primary shows this node streaming. The primary tells: a
    warm standby's process titles show it only once WAL has arrived.
    """
    query = pg_commands.replication_state_sql(settings["node_name"])
    deadline = time.monotonic() + wait
    while _remote_sql(settings, host, port, query) != "streaming":
        if pg_datadir.postmaster_pid(settings["data_dir"]) is None or time.monotonic() > deadline:
            raise errors.OperationFailed(
                f"{settings['node_name']} started as a standby of {addresses.join(host, port)} "
                f"but does not stream from it after {wait} s",
                now=_log_tail(settings),
            )
        time.sleep(_POLL_SECONDS)


def _divergence(settings, host, port):
    """
    Return pg_decisions.divergence for this node and the primary at
    host:port, and the primary's IDENTIFY_SYSTEM.
    """
    identity = _identify_system(settings, host, port)
    # An empty data directory (a rebuilt server) is like another cluster's:
    # nothing to discard, a base backup fills it.
    control = (_controldata(settings) if pg_datadir.holds_cluster(settings["data_dir"])
               else {"Database system identifier": None, "Latest checkpoint's TimeLineID": 0})
    same_cluster = control["Database system identifier"] == identity["system_identifier"]
    timeline, end, local_history = int(control["Latest checkpoint's TimeLineID"]), None, None
    if same_cluster:
        timeline, end = _wal_end(settings, control)
        local_history = pg_datadir.timeline_history(settings["data_dir"], timeline)
        # The primary's position read after this node's: a running standby
        # may have received more since the first.
        identity = _identify_system(settings, host, port)
    history = None
    if identity["timeline"] > 1:
        history = _remote_sql(settings, host, port, f"TIMELINE_HISTORY {identity['timeline']}",
                              replication=True)
    decided = pg_decisions.divergence(
        same_cluster, timeline, end, local_history, pg_facts.primary_timelines(identity, history),
        pg_decisions.rewind_possible(control),
    )
    return decided, identity


@errors.reported_as(CommandExecutionError)
def divergence(primary):
    """
    Return what rejoining this node to ``primary`` (see rejoin) would
    discard, and how it would rejoin, changing nothing: the WAL this node
    holds past the point where the primary's history left its own, that is
    what it wrote (or received) that the primary does not have. Works on a
    stopped node, as rejoin finds it, and on a running one, where the answer
    is a snapshot: a running node may write more before it is stopped.

    primary
        The primary's address: ``HOST`` or ``HOST:PORT`` (default port: this
        node's).

    Returns ``method`` (none, rewind or basebackup: what rejoin would do),
    ``fork_lsn`` and ``fork_timeline`` (where the primary's history left
    this node's: the end of the last timeline both share, walking back
    through this node's timeline history when the primary never had its
    timeline), ``local_end_lsn`` (the end of this node's WAL, after its last
    record), ``discarded_lsn_range`` (``"X/Y-X/Y"``, from the fork to that
    end; None when nothing would be discarded), ``discarded_bytes``,
    ``timeline`` (this node's), ``primary_timeline`` and ``same_cluster``.
    A node of another cluster (``same_cluster`` False) shares no history with
    the primary: a base backup replaces its data directory, with no fork and
    nothing counted as discarded.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.divergence primary=airflow-server2
    """
    settings = _settings()
    host, port = addresses.parse(primary, settings["port"])
    return _divergence(settings, host, port)[0]


def _keep_discarded_wal(settings, diverged):
    """
    Copy the WAL segment files holding the range to be discarded, and the
    timeline history files, into ``<data_dir>.discarded-<UTC time>/pg_wal``;
    return that directory's parent.
    """
    data_dir = settings["data_dir"]
    segment_size = int(_controldata(settings)["Bytes per WAL segment"])
    names = pg_decisions.wal_files_to_keep(
        pg_datadir.wal_file_names(data_dir), segment_size,
        pg_facts.parse_lsn(diverged["fork_lsn"]), pg_facts.parse_lsn(diverged["local_end_lsn"]),
    )
    kept = pg_datadir.discarded_path(data_dir)
    try:
        return pg_datadir.keep_wal(data_dir, names, kept, *_os_user_ids(settings))
    except OSError as error:
        raise errors.OperationFailed(
            f"could not keep a copy of the WAL to discard, {diverged['discarded_lsn_range']}, "
            f"in {kept}: {error}",
            now="nothing was discarded; what was copied is left there",
            fix="make room beside the data directory, remove that copy, then retry",
        ) from error


@errors.reported_as(CommandExecutionError)
def rejoin(primary, wait=120, discard=None):
    """
    Turn this stopped node (typically a former primary) into a streaming
    standby of ``primary``, as cheaply as it safely can:

    - ``none``: its WAL is part of the primary's history (it was shut down
      cleanly before the primary's timeline left it): only configure it;
    - ``rewind``: pg_rewind from the primary (needs wal_log_hints or data
      checksums here);
    - ``basebackup``: a fresh copy of the primary, when the clusters differ,
      the data directory is empty (a rebuilt server), or rewinding is
      impossible or fails.

    A rewind or a base backup discards the WAL this node holds past the point
    where the primary's history left its own (see divergence): writes the
    primary does not have. Unless ``discard`` names exactly that range, it
    refuses, changing nothing, and says the range, its size and the command
    that consents. With consent it keeps what it discards, beside the data
    directory in ``<data_dir>.discarded-<UTC time>`` (owned by the OS user,
    0700): before pg_rewind a copy of the WAL segment files holding the range
    and the timeline history files, in its ``pg_wal``; a base backup keeps
    the whole data directory it replaces there instead (in its
    ``data-after-failed-rewind`` after a failed rewind). A node of another
    cluster shares no history with the primary: it is replaced without
    consent, and not kept.

    Then it makes sure this node's replication slot exists on the primary,
    writes standby.signal, primary_conninfo (application_name is node_name)
    and primary_slot_name, removes any fence marker, starts the server and
    waits until the primary shows it streaming. Refuses a running node (a
    running primary is a split brain: both take writes).

    primary
        The primary's address: ``HOST`` or ``HOST:PORT`` (default port: this
        node's).
    wait
        Seconds to wait, once started, for it to stream.
    discard
        The operator's consent to discard this node's WAL past the fork: the
        range ``"X/Y-X/Y"`` that divergence (or the refusal) reports.

    Returns ``method``, ``seconds`` (all of it), ``rewind_seconds`` and/or
    ``basebackup_seconds``, ``rewind_error`` when a failed rewind fell back to
    a base backup, ``timeline``, ``discarded_lsn_range`` (None when nothing
    was discarded), ``discarded_bytes`` and ``kept`` (the directory holding
    what was discarded, or None).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.rejoin primary=airflow-server2
        salt airflow-server1 pg_replication.rejoin primary=10.11.12.20:5432 wait=300
        salt airflow-server1 pg_replication.rejoin primary=airflow-server2 \
            discard=0/3018C58-0/3A1B2C0
    """
    settings = _settings()
    node = settings["node_name"]
    state = _status(settings)
    refusal = pg_decisions.rejoin_refusal(node, __grains__["id"], state["role"], primary)
    if refusal:
        raise refusal
    started = time.monotonic()
    host, port = addresses.parse(primary, settings["port"])
    diverged, identity = _divergence(settings, host, port)
    refusal = pg_decisions.discard_refusal(node, __grains__["id"], primary, diverged, discard)
    if refusal:
        raise refusal
    method = diverged["method"]
    log.info("pg_replication: rejoining %s to %s by %s", node, addresses.join(host, port), method)
    slot = pg_facts.slot_name(node)
    _remote_sql(settings, host, port, pg_commands.create_slot_sql(slot))
    rejoined, kept = {}, None
    try:
        if method == "rewind":
            _check_control_timeline(settings, host, port, identity["timeline"])
            if diverged["discarded_bytes"]:
                kept = _keep_discarded_wal(settings, diverged)
                log.warning("pg_replication: %s discards %s (%s bytes of WAL), kept in %s",
                            node, diverged["discarded_lsn_range"], diverged["discarded_bytes"],
                            kept)
            rewind_started = time.monotonic()
            result = _run(settings, *pg_commands.pg_rewind_args(
                "pg_rewind", settings["data_dir"], _remote_conninfo(settings, host, port),
                settings["conf_dir"],
            ))
            rejoined["rewind_seconds"] = round(time.monotonic() - rewind_started, 3)
            if result["retcode"] != 0:
                log.warning(
                    "pg_replication: pg_rewind failed, taking a base backup: %s", _output_of(result)
                )
                rejoined["rewind_error"] = (_output_of(result).splitlines() or ["no output"])[-1]
                method = "basebackup"
        if method == "basebackup":
            keep = None
            if diverged["discarded_bytes"]:
                keep = (os.path.join(kept, "data-after-failed-rewind") if kept
                        else pg_datadir.discarded_path(settings["data_dir"]))
            backup_started = time.monotonic()
            kept_data_dir = pg_datadir.replace_data_dir(
                settings["data_dir"], *_os_user_ids(settings),
                functools.partial(_base_backup, settings, host, port, slot), keep=keep,
            )
            rejoined["basebackup_seconds"] = round(time.monotonic() - backup_started, 3)
            if kept_data_dir:
                log.warning("pg_replication: %s discards %s (%s bytes of WAL), its data "
                            "directory kept in %s", node, diverged["discarded_lsn_range"],
                            diverged["discarded_bytes"], kept_data_dir)
            kept = kept or kept_data_dir
        primary_conninfo = pg_facts.format_conninfo({
            "host": host, "port": port, "user": settings["replication_user"],
            "application_name": node, "passfile": settings["passfile"],
        })
        pg_datadir.configure_standby(settings["data_dir"], primary_conninfo, slot,
                                     *_os_user_ids(settings))
        _start(settings)
        _wait_for_streaming(settings, host, port, wait)
    except errors.HaError as error:
        if not kept:
            raise
        # Whatever failed, the operator must know where the discarded WAL is.
        where = f"the WAL it discards, {diverged['discarded_lsn_range']}, is kept in {kept}"
        raise type(error)(error.what, now="; ".join(filter(None, [error.now, where])),
                          fix=error.fix) from error
    rejoined.update(method=method, seconds=round(time.monotonic() - started, 3),
                    timeline=_status(settings)["timeline"],
                    discarded_lsn_range=diverged["discarded_lsn_range"],
                    discarded_bytes=diverged["discarded_bytes"], kept=kept)
    log.info("pg_replication: rejoined %s: %s", node, rejoined)
    return rejoined

"""
Operate PostgreSQL streaming replication: status, promotion, fencing, and
rejoining a former primary as a standby (pg_rewind or base backup).

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

import datetime
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import tempfile
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "pg_replication"

_DEFAULTS = {
    "bin_dir": "/usr/lib/postgresql/15/bin",
    "data_dir": "/var/lib/postgresql/15/main",
    "conf_dir": None,
    "service": None,
    "port": 5432,
    "socket_dir": "/var/run/postgresql",
    "os_user": "postgres",
    "replication_user": "replicator",
    "passfile": None,
    "node_name": None,
}

_FENCE_MARKER = "pg_replication.fenced"
_STANDBY_SIGNAL = "standby.signal"
_AUTO_CONF = "postgresql.auto.conf"
# pg_ctl's own default; a fast shutdown that takes longer is finished off with
# an immediate one.
_STOP_SECONDS = 60
_START_SECONDS = 60
_POLL_SECONDS = 0.1
_LSN = r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"
_WAL_FILE = r"[0-9A-F]{24}"


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


# --- Pure logic: parsing and decisions (no server, no Salt) ---------------------


def _parse_lsn(text):
    """
    Return the integer position of an LSN written as ``"X/Y"`` (hexadecimal).
    """
    if not re.fullmatch(_LSN, text.strip()):
        raise ValueError(f"not an LSN: {text!r}")
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _format_lsn(position):
    """
    Return an integer WAL position written as PostgreSQL writes LSNs, ``"X/Y"``.
    """
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def _parse_controldata(text):
    """
    Return pg_controldata's output as a dict of its labels and values (strings).
    """
    values = {}
    for line in text.splitlines():
        label, separator, value = line.partition(":")
        if separator:
            values[label.strip()] = value.strip()
    return values


def _wal_file_start(wal_file, segment_size):
    """
    Return the timeline and the LSN where a WAL segment file begins, from its
    name (``TTTTTTTTXXXXXXXXYYYYYYYY``).
    """
    timeline, log_id, segment = (int(wal_file[i : i + 8], 16) for i in (0, 8, 16))
    return timeline, (log_id << 32) + segment * segment_size


def _parse_timeline_history(text):
    """
    Return the entries of a timeline history file, oldest first, as
    ``(timeline, switch_lsn)``: the primary left ``timeline`` at ``switch_lsn``.
    """
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if line.strip() and not line.startswith("#") and len(fields) >= 2:
            entries.append((int(fields[0]), _parse_lsn(fields[1])))
    return entries


def _parse_walreceiver_title(title):
    """
    Return ``{"status", "lsn"}`` from a WAL receiver's process title, or None
    when the title is not a WAL receiver's. ``postgres: 15/main: walreceiver
    streaming 0/3000148`` gives the LSN it has written up to. The title shows
    no status until the first WAL arrives: that gives status "started".
    """
    match = re.search(
        rf"^postgres: (?:.*: )?walreceiver(?: (?P<status>[a-z]+))?(?: at)?(?: (?P<lsn>{_LSN}))?",
        title,
    )
    if not match:
        return None
    return {"status": match.group("status") or "started", "lsn": match.group("lsn")}


def _parse_startup_title(title):
    """
    Return ``{"activity", "wal_file"}`` from a startup (recovery) process's
    title, such as ``postgres: startup recovering 000000010000000000000003``, or
    None when the title is not a startup process's.
    """
    match = re.search(
        rf"^postgres: (?:.*: )?startup(?: (?P<activity>[a-z ]+?))?"
        rf"(?: (?P<wal_file>{_WAL_FILE}))?\s*$",
        title,
    )
    if not match:
        return None
    return {"activity": match.group("activity"), "wal_file": match.group("wal_file")}


def _parse_waldump_last_record(stderr):
    """
    Return the LSN of the last record pg_waldump read before the end of the
    WAL, from its closing error (``error in WAL record at 0/1500718: invalid
    record length at 0/1500790: wanted 24, got 0``), or None when it read none.
    """
    match = re.search(rf"error in WAL record at ({_LSN})", stderr)
    return match.group(1) if match else None


def _server_role(running, cluster_state, standby_signal):
    """
    Return "primary", "standby" or "stopped". The control file tells a running
    server's role once recovery has begun or ended; while the server is still
    starting (or stopping), standby.signal tells what it comes up as.
    """
    if not running:
        return "stopped"
    if cluster_state == "in production":
        return "primary"
    if cluster_state == "in archive recovery":
        return "standby"
    return "standby" if standby_signal else "primary"


def _slot_name(node_name):
    """
    Return the replication slot name for a node: lower case, characters outside
    ``[a-z0-9_]`` replaced by ``_``, at most 63 characters (PostgreSQL's limit).
    """
    return re.sub(r"[^a-z0-9_]", "_", node_name.lower())[:63]


def _parse_node_address(node, default_port):
    """
    Return ``(host, port)`` from ``"HOST"``, ``"HOST:PORT"`` or ``"[IPV6]:PORT"``.
    """
    match = re.fullmatch(
        r"\[(?P<ipv6>[^\]]+)\](?::(?P<ipv6_port>\d+))?|(?P<host>[^:\[\]\s]+)(?::(?P<port>\d+))?",
        str(node).strip(),
    )
    if not match:
        raise CommandExecutionError(
            f"{node!r} is not a node address: give HOST or HOST:PORT ([IPV6]:PORT for IPv6)"
        )
    host = match.group("ipv6") or match.group("host")
    port = match.group("ipv6_port") or match.group("port") or default_port
    return host, int(port)


def _format_conninfo(params):
    """
    Return a libpq connection string from a dict, quoting values that need it;
    None values are left out.
    """

    def quote(value):
        value = str(value)
        if value and not re.search(r"[\s'\\]", value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quote(value)}" for key, value in params.items() if value is not None)


def _parse_conninfo(conninfo):
    """
    Return the keywords and values of a libpq ``key=value`` connection string.
    """
    pair = re.compile(r"\s*(\w+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?:[^\s'\\]|\\.)+))")
    params = {}
    position = 0
    while True:
        match = pair.match(conninfo, position)
        if not match:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1)] = re.sub(r"\\(.)", r"\1", value)
        position = match.end()
    return params


def _conf_value(text, key):
    """
    Return the value of ``key`` in postgresql.conf syntax (the last setting
    wins), unquoted, or None when it is not set.
    """
    value = None
    line_pattern = re.compile(
        rf"^\s*{re.escape(key)}(?:\s*=\s*|\s+)"
        r"(?:'(?P<quoted>(?:[^'\\]|''|\\.)*)'|(?P<bare>[^\s#]+))"
    )
    for line in text.splitlines():
        match = line_pattern.match(line)
        if match:
            if match.group("quoted") is not None:
                value = re.sub(r"''|\\(.)", lambda m: m.group(1) or "'", match.group("quoted"))
            else:
                value = match.group("bare")
    return value


def _set_conf_values(text, values):
    """
    Return postgresql.conf text with ``values`` set: lines setting those keys
    are removed and one ``key = 'value'`` line per key is appended.
    """
    keys = "|".join(re.escape(key) for key in values)
    setting = re.compile(rf"^\s*(?:{keys})\s*(?:=|\s)")
    kept = [line for line in text.splitlines() if not setting.match(line)]
    for key, value in values.items():
        quoted = str(value).replace("\\", "\\\\").replace("'", "''")
        kept.append(f"{key} = '{quoted}'")
    return "\n".join(kept) + "\n"


def _promotion_blockers(
    role, fenced, primary_reachable, lag_bytes, max_lag_bytes=None, force=False
):
    """
    Return why promoting this node now would be unsafe, as a list of reasons
    (empty when it is safe).

    role
        This node's role from status(); only a running standby can be promoted,
        forced or not.
    fenced
        Whether this node carries a fence marker.
    primary_reachable
        Whether the primary still answers.
    lag_bytes
        How many bytes of WAL the primary has that this node has not received,
        or None when unknown.
    max_lag_bytes
        The most WAL that may be lost when the primary is unreachable; None
        skips the check.
    force
        Promote despite a fence or lag.
    """
    if role != "standby":
        return [f"it is {role}, not a running standby"]
    if force:
        return []
    blockers = []
    if fenced:
        blockers.append("it is fenced; rejoin it to the primary first, or force")
    if max_lag_bytes is not None and not primary_reachable:
        if lag_bytes is None:
            blockers.append(
                "the primary is unreachable and the standby's lag is unknown; "
                "give the primary's last known LSN, or force"
            )
        elif lag_bytes > max_lag_bytes:
            blockers.append(
                f"the primary is unreachable and the standby is {lag_bytes} bytes of WAL "
                f"behind (more than {max_lag_bytes}): promoting would lose them; force to accept"
            )
    return blockers


def _choose_rejoin_method(
    same_cluster, local_timeline, local_last_lsn, primary_timelines, rewind_possible
):
    """
    Return how a stopped node becomes a standby of a primary: "none" (its WAL
    is part of the primary's history: configure it and start it), "rewind"
    (pg_rewind) or "basebackup" (copy the primary).

    same_cluster
        Whether both have the same database system identifier.
    local_timeline, local_last_lsn
        The timeline and LSN of the node's last WAL record (its shutdown
        checkpoint), or local_last_lsn None when unknown (the node crashed or was
        in recovery).
    primary_timelines
        The primary's timelines, oldest first, as ``(timeline, end_lsn)``: the
        entries of its timeline history (where it left each one) followed by
        its current timeline and current WAL position.
    rewind_possible
        Whether the node has wal_log_hints on or data checksums.
    """
    if not same_cluster:
        return "basebackup"
    timeline_ends = dict(primary_timelines)
    # The primary leaves a timeline at a record boundary: a last record that
    # starts before it also ends before it, so all the node's WAL is shared.
    if (
        local_last_lsn is not None
        and local_timeline in timeline_ends
        and local_last_lsn < timeline_ends[local_timeline]
    ):
        return "none"
    return "rewind" if rewind_possible else "basebackup"


# --- Settings, commands, files ---------------------------------------------------


def _settings():
    settings = dict(_DEFAULTS)
    settings.update(__salt__["config.get"]("pg_replication", {}) or {})
    settings["node_name"] = settings["node_name"] or __grains__["id"]
    settings["port"] = int(settings["port"])
    return settings


def _program(settings, name):
    return os.path.join(settings["bin_dir"], name)


def _run(settings, args, timeout=None):
    """
    Run a PostgreSQL program as the OS user; return cmd.run_all's result.
    """
    env = {"LC_ALL": "C"}  # we parse the programs' English output
    if settings["passfile"]:
        env["PGPASSFILE"] = settings["passfile"]
    return __salt__["cmd.run_all"](
        args,
        runas=settings["os_user"],
        env=env,
        cwd="/",
        python_shell=False,
        ignore_retcode=True,
        timeout=timeout,
    )


def _output_of(result):
    return (result["stderr"] or result["stdout"]).strip()


def _controldata(settings):
    result = _run(settings, [_program(settings, "pg_controldata"), "-D", settings["data_dir"]])
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"pg_controldata could not read {settings['data_dir']}: {_output_of(result)}; "
            "check pg_replication:data_dir"
        )
    return _parse_controldata(result["stdout"])


def _local_sql(settings, sql):
    """
    Run SQL on the local server over its unix socket; return psql's output.
    """
    result = _run(
        settings,
        [_program(settings, "psql"), "-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1",
         "-h", settings["socket_dir"], "-p", str(settings["port"]), "-d", "postgres", "-c", sql],
    )
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"SQL on the local server (socket {settings['socket_dir']}, port {settings['port']}) "
            f"failed: {_output_of(result)}; check that it runs and that {settings['os_user']} "
            "may connect locally (peer authentication)"
        )
    return result["stdout"].strip()


def _remote_conninfo(settings, host, port, replication=False):
    params = {
        "host": host, "port": port, "user": settings["replication_user"], "dbname": "postgres"
    }
    if replication:
        params["replication"] = "true"
    return _format_conninfo(params)


def _remote_psql(settings, host, port, sql, replication=False):
    """
    Run SQL (or a replication command) on another node as the replication user.
    """
    conninfo = _remote_conninfo(settings, host, port, replication)
    result = _run(
        settings,
        [_program(settings, "psql"), "-X", "-A", "-t", "-q", "-w", "-d", conninfo, "-c", sql],
        timeout=60,
    )
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"{sql.split()[0]} on {host}:{port} as {settings['replication_user']} failed: "
            f"{_output_of(result)}; check the address, pg_hba.conf on that node, the password "
            "file (pg_replication:passfile) and the user's privileges"
        )
    return result["stdout"].strip()


def _identify_system(settings, host, port):
    """
    Return the system identifier, current timeline and WAL flush position of
    another node, from the replication protocol's IDENTIFY_SYSTEM.
    """
    row = _remote_psql(settings, host, port, "IDENTIFY_SYSTEM", replication=True)
    system_identifier, timeline, flush_lsn = row.split("|")[:3]
    return {
        "system_identifier": system_identifier,
        "timeline": int(timeline),
        "flush_lsn": _parse_lsn(flush_lsn),
    }


def _primary_timelines(settings, host, port, identity):
    """
    Return the primary's timelines as _choose_rejoin_method takes them.
    """
    current = [(identity["timeline"], identity["flush_lsn"])]
    if identity["timeline"] == 1:
        return current
    # Replies "filename|content"; the file name contains no "|".
    reply = _remote_psql(
        settings, host, port, f"TIMELINE_HISTORY {identity['timeline']}", replication=True
    )
    return _parse_timeline_history(reply.partition("|")[2]) + current


def _os_user_ids(settings):
    user = pwd.getpwnam(settings["os_user"])
    return user.pw_uid, user.pw_gid


def _write_file(settings, path, text):
    """
    Replace a file in the data directory atomically, owned by the OS user, 0600.
    """
    uid, gid = _os_user_ids(settings)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pg_replication-")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chown(temporary, uid, gid)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read_text(path):
    try:
        with open(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def _read_fence(data_dir):
    text = _read_text(os.path.join(data_dir, _FENCE_MARKER))
    return None if text is None else json.loads(text)


def _remove_fence(data_dir):
    try:
        os.unlink(os.path.join(data_dir, _FENCE_MARKER))
    except FileNotFoundError:
        pass


# --- Processes ------------------------------------------------------------------


def _postmaster_pid(data_dir):
    """
    Return the pid of the postmaster running on data_dir, or None.
    postmaster.pid outlives a crash, and its pid may be another process's
    since: it counts only if that process is a postgres in this data directory.
    """
    text = _read_text(os.path.join(data_dir, "postmaster.pid"))
    if not text or not text.split("\n", 1)[0].strip().isdigit():
        return None
    pid = int(text.split("\n", 1)[0])
    try:
        program = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        directory = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    if program.startswith("postgres") and os.path.realpath(directory) == os.path.realpath(data_dir):
        return pid
    return None


def _child_titles(pid):
    """
    Return the process titles of a process's children. Scans /proc, since
    /proc/PID/task/*/children exists only on kernels built with it.
    """
    titles = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
                parent = int(stream.read().rpartition(")")[2].split()[1])
            if parent == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as stream:
                    title = stream.read().replace(b"\0", b" ").decode(errors="replace")
                titles.append(title.strip())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return titles


def _history_timelines(data_dir):
    names = os.listdir(os.path.join(data_dir, "pg_wal"))
    return [int(name[:8], 16) for name in names if re.fullmatch(r"[0-9A-F]{8}\.history", name)]


def _log_file(settings):
    data_dir = os.path.normpath(settings["data_dir"])
    return os.path.join(os.path.dirname(data_dir), os.path.basename(data_dir) + ".log")


def _log_tail(settings):
    text = _read_text(_log_file(settings)) if not settings["service"] else None
    if not text:
        return ""
    return "; last lines of its log:\n" + "\n".join(text.splitlines()[-10:])


def _start(settings):
    if settings["service"]:
        if not __salt__["service.start"](settings["service"]):
            raise CommandExecutionError(
                f"service {settings['service']} did not start; see its journal"
            )
        return
    args = [_program(settings, "pg_ctl"), "start", "-w", "-t", str(_START_SECONDS),
            "-D", settings["data_dir"], "-l", _log_file(settings)]
    if settings["conf_dir"]:
        config_file = os.path.join(settings["conf_dir"], "postgresql.conf")
        # pg_ctl hands -o to a shell
        args += ["-o", f"-c config_file={shlex.quote(config_file)}"]
    result = _run(settings, args)
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"PostgreSQL on {settings['data_dir']} did not start: {_output_of(result)}"
            f"{_log_tail(settings)}"
        )


def _stop(settings):
    """
    Stop the local server: fast shutdown, immediate if that fails.
    """
    if settings["service"] and __salt__["service.stop"](settings["service"]):
        return
    pg_ctl = _program(settings, "pg_ctl")
    for mode in ("fast", "immediate"):
        result = _run(settings, [pg_ctl, "stop", "-w", "-t", str(_STOP_SECONDS), "-m", mode,
                                 "-D", settings["data_dir"]])
        if result["retcode"] == 0 or _postmaster_pid(settings["data_dir"]) is None:
            return
        log.warning("pg_replication: %s shutdown failed: %s", mode, _output_of(result))
    raise CommandExecutionError(
        f"PostgreSQL on {settings['data_dir']} did not stop, even with an immediate shutdown: "
        f"{_output_of(result)}; stop it by hand (kill the postmaster)"
    )


# --- Status -----------------------------------------------------------------------

_PRIMARY_STATUS_SQL = """
select json_build_object(
  'current_lsn', pg_current_wal_lsn(),
  'current_wal_file', pg_walfile_name(pg_current_wal_lsn()),
  'standbys', coalesce((
    select json_agg(json_build_object(
      'application_name', application_name,
      'client_addr', host(client_addr),
      'state', state,
      'sent_lsn', sent_lsn,
      'write_lsn', write_lsn,
      'flush_lsn', flush_lsn,
      'replay_lsn', replay_lsn,
      'lag_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
      'lag_seconds', extract(epoch from replay_lag)::float8,
      'sync_state', sync_state) order by application_name)
    from pg_stat_replication), '[]'),
  'slots', coalesce((
    select json_agg(json_build_object(
      'slot_name', slot_name,
      'active', active,
      'restart_lsn', restart_lsn) order by slot_name)
    from pg_replication_slots where slot_type = 'physical'), '[]'))
"""


def _primary_status(settings):
    state = json.loads(_local_sql(settings, _PRIMARY_STATUS_SQL))
    state["timeline"] = int(state.pop("current_wal_file")[:8], 16)
    return state


def _standby_status(settings, control, postmaster_pid):
    """
    What a standby has received and replayed, without SQL: from the titles of
    its WAL receiver and startup processes, its control file and its WAL.
    """
    wal_receiver = startup = None
    for title in _child_titles(postmaster_pid):
        wal_receiver = wal_receiver or _parse_walreceiver_title(title)
        startup = startup or _parse_startup_title(title)
    timelines = [_int_or_zero(control.get("Min recovery ending loc's timeline"))]
    replayed = [_parse_lsn(control.get("Minimum recovery ending location", "0/0"))]
    received = wal_receiver["lsn"] if wal_receiver else None
    if startup and startup["wal_file"]:
        segment_size = int(control["Bytes per WAL segment"])
        timeline, segment_start = _wal_file_start(startup["wal_file"], segment_size)
        timelines.append(timeline)
        replayed.append(segment_start)
        if received is None:
            # What was replayed was received, and a lower bound beats none.
            received = (_last_local_record(settings, timeline, max(replayed))
                        or _format_lsn(max(replayed)))
    return {
        "wal_receiver": wal_receiver,
        "received_lsn": received,
        "replayed_lsn": _format_lsn(max(replayed)),
        "recovery": startup,
        "recovery_timelines": timelines,
    }


def _last_local_record(settings, timeline, start_lsn):
    """
    Return where the last complete WAL record in pg_wal begins, reading from
    start_lsn on timeline, or None when pg_waldump finds none. It is what a
    standby has received when its WAL receiver cannot tell (it is not running,
    or nothing arrived since it started: the primary is down or idle).
    """
    result = _run(settings, [_program(settings, "pg_waldump"), "--quiet",
                             "--path", os.path.join(settings["data_dir"], "pg_wal"),
                             "--timeline", str(timeline), "--start", _format_lsn(start_lsn)])
    return _parse_waldump_last_record(result["stderr"])


def _int_or_zero(text):
    return int(text) if text and text.isdigit() else 0


def _standby_of(data_dir):
    if not os.path.exists(os.path.join(data_dir, _STANDBY_SIGNAL)):
        return None
    conninfo = _conf_value(_read_text(os.path.join(data_dir, _AUTO_CONF)) or "", "primary_conninfo")
    if not conninfo:
        return None
    params = _parse_conninfo(conninfo)
    return {
        "host": params.get("host") or params.get("hostaddr"),
        "port": int(params.get("port", 5432)),
    }


def _status(settings):
    data_dir = settings["data_dir"]
    control = _controldata(settings)
    postmaster_pid = _postmaster_pid(data_dir)
    running = postmaster_pid is not None
    cluster_state = control.get("Database cluster state")
    standby_signal = os.path.exists(os.path.join(data_dir, _STANDBY_SIGNAL))
    role = _server_role(running, cluster_state, standby_signal)
    fence = _read_fence(data_dir)
    state = {
        "node_name": settings["node_name"],
        "checked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "role": role,
        "running": running,
        "cluster_state": cluster_state,
        "system_identifier": control.get("Database system identifier"),
        "last_checkpoint_lsn": control.get("Latest checkpoint location"),
        "fenced": fence is not None,
        "fence": fence,
        "standby_of": _standby_of(data_dir),
    }
    if role == "primary":
        state.update(_primary_status(settings))
        return state
    # A standby's control file may still show an older timeline than the one
    # it follows: also count the history files it has fetched and the segment
    # it replays.
    timelines = [int(control["Latest checkpoint's TimeLineID"])] + _history_timelines(data_dir)
    if role == "standby":
        standby = _standby_status(settings, control, postmaster_pid)
        timelines += standby.pop("recovery_timelines")
        state.update(standby)
    state["timeline"] = max(timelines)
    return state


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


def is_fenced():
    """
    Return True when this node is fenced (see fence) and not yet rejoined or
    promoted.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.is_fenced
    """
    return _read_fence(_settings()["data_dir"]) is not None


def database_exists(name):
    """
    Return True when the running local server has a database called ``name``
    (a primary or a hot standby: a warm standby runs no SQL, and raises).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.database_exists airflow
    """
    literal = "'" + name.replace("'", "''") + "'"
    settings = _settings()
    return _local_sql(settings, f"select count(*) from pg_database where datname = {literal}") == "1"


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
    settings = _settings()
    was_running = _postmaster_pid(settings["data_dir"]) is not None
    if was_running:
        _stop(settings)
    return {"stopped": True, "was_running": was_running}


# --- Fencing, promotion, rejoining ------------------------------------------------


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
        raise CommandExecutionError(
            f"{data_dir} is not a PostgreSQL data directory; check pg_replication:data_dir"
        )
    # Signal file and marker come first, so that nothing can restart the
    # server as a primary between the stop and their creation.
    _write_file(settings, os.path.join(data_dir, _STANDBY_SIGNAL), "")
    marker = _read_fence(data_dir)
    if marker is None:
        marker = {
            "fenced_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "reason": reason,
        }
        _write_file(settings, os.path.join(data_dir, _FENCE_MARKER), json.dumps(marker) + "\n")
    was_running = _postmaster_pid(data_dir) is not None
    if was_running:
        log.info("pg_replication: fencing %s: %s", settings["node_name"], reason)
        _stop(settings)
    return {"fenced": True, "was_running": was_running, **marker}


def _primary_lag(settings, standby_of, received_lsn, primary_lsn):
    """
    Return whether the primary answers, and how many bytes of WAL it has that
    this node has not received (None when unknown).
    """
    reachable = False
    if standby_of:
        try:
            identity = _identify_system(settings, standby_of["host"], standby_of["port"])
        except CommandExecutionError as error:
            log.info("pg_replication: primary unreachable: %s", error)
        else:
            reachable = True
            primary_lsn = _format_lsn(identity["flush_lsn"])
    if primary_lsn is None or received_lsn is None:
        return reachable, None
    return reachable, max(0, _parse_lsn(primary_lsn) - _parse_lsn(received_lsn))


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
    blockers = _promotion_blockers(
        state["role"], state["fenced"], reachable, lag_bytes, max_lag_bytes, force
    )
    if blockers:
        raise CommandExecutionError(
            f"refusing to promote {settings['node_name']}: " + "; ".join(blockers)
        )
    started = time.monotonic()
    result = _run(settings, [_program(settings, "pg_ctl"), "promote", "-w", "-t", str(int(wait)),
                             "-D", settings["data_dir"]])
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"pg_ctl promote failed on {settings['data_dir']}: {_output_of(result)}"
            f"{_log_tail(settings)}"
        )
    deadline = started + wait
    while True:
        try:
            if _local_sql(settings, "select pg_is_in_recovery()") == "f":
                break
        except CommandExecutionError:
            pass  # connections are refused until the end of recovery
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"{settings['node_name']} was promoted but does not accept writes after {wait} s"
                f"{_log_tail(settings)}"
            )
        time.sleep(_POLL_SECONDS)
    seconds = time.monotonic() - started
    _local_sql(settings, "checkpoint")
    _remove_fence(settings["data_dir"])
    timeline = _primary_status(settings)["timeline"]
    history = _read_text(os.path.join(settings["data_dir"], "pg_wal", f"{timeline:08X}.history"))
    promoted = {
        "promoted": True,
        "timeline": timeline,
        "switch_lsn": _format_lsn(_parse_timeline_history(history)[-1][1]),
        "seconds": round(seconds, 3),
    }
    if lag_bytes is not None:
        promoted["lag_bytes"] = lag_bytes
    log.info("pg_replication: promoted %s: %s", settings["node_name"], promoted)
    return promoted


def _ensure_slot(settings, host, port, slot):
    """
    Create this node's physical slot on the primary unless it exists. It
    reserves WAL from the primary's last checkpoint, which a rewound or freshly
    copied node starts from.
    """
    _remote_psql(
        settings, host, port,
        f"select pg_create_physical_replication_slot('{slot}', true) "
        f"where not exists (select from pg_replication_slots where slot_name = '{slot}')",
    )


def _check_control_timeline(settings, host, port, timeline):
    """
    pg_rewind reads the source's timeline from its control file, which shows
    a promotion only after the following checkpoint.
    """
    recorded = int(
        _remote_psql(settings, host, port, "select timeline_id from pg_control_checkpoint()")
    )
    if recorded != timeline:
        raise CommandExecutionError(
            f"the primary {host}:{port} is on timeline {timeline} but its control file still "
            f"shows {recorded}: run CHECKPOINT on it (pg_rewind reads the control file), then retry"
        )


def _rewind(settings, host, port):
    args = [_program(settings, "pg_rewind"), "--target-pgdata", settings["data_dir"],
            "--source-server", _remote_conninfo(settings, host, port)]
    if settings["conf_dir"]:
        # pg_rewind runs the server in single-user mode when it must finish
        # crash recovery first
        args += ["--config-file", os.path.join(settings["conf_dir"], "postgresql.conf")]
    return _run(settings, args)


def _replace_with_base_backup(settings, host, port, slot):
    """
    Replace the data directory with a base backup of the primary. The old one
    is moved aside, deleted only after success, and put back on failure.
    """
    data_dir = os.path.normpath(settings["data_dir"])
    aside = data_dir + ".pg_replication-old"
    if os.path.exists(aside):
        raise CommandExecutionError(
            f"{aside} exists, left by an interrupted rejoin: check whether it holds data "
            "you need, remove it, then retry"
        )
    uid, gid = _os_user_ids(settings)
    os.rename(data_dir, aside)
    try:
        os.mkdir(data_dir, 0o700)
        os.chown(data_dir, uid, gid)
        result = _run(
            settings,
            [_program(settings, "pg_basebackup"), "-D", data_dir, "-X", "stream", "-S", slot,
             "-R", "--checkpoint=fast", "-w", "-d", _remote_conninfo(settings, host, port)],
        )
        if result["retcode"] != 0:
            raise CommandExecutionError(
                f"pg_basebackup from {host}:{port} failed: {_output_of(result)}; the previous "
                f"data directory was put back"
            )
        os.chmod(data_dir, 0o700)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        os.rename(aside, data_dir)
        raise
    shutil.rmtree(aside)


def _configure_standby(settings, host, port, slot):
    """
    Make the stopped node start as a standby of host:port. The server is down,
    so ALTER SYSTEM is not available: edit postgresql.auto.conf directly.
    """
    data_dir = settings["data_dir"]
    conninfo = _format_conninfo({
        "host": host,
        "port": port,
        "user": settings["replication_user"],
        "application_name": settings["node_name"],
        "passfile": settings["passfile"],
    })
    auto_conf = os.path.join(data_dir, _AUTO_CONF)
    text = _set_conf_values(
        _read_text(auto_conf) or "", {"primary_conninfo": conninfo, "primary_slot_name": slot}
    )
    _write_file(settings, auto_conf, text)
    _write_file(settings, os.path.join(data_dir, _STANDBY_SIGNAL), "")
    _remove_fence(data_dir)


def _wait_for_streaming(settings, host, port, wait):
    """
    Wait until the primary shows this node streaming. The primary tells: a
    warm standby's process titles show it only once WAL has arrived.
    """
    name = settings["node_name"].replace("'", "''")
    query = f"select state from pg_stat_replication where application_name = '{name}'"
    deadline = time.monotonic() + wait
    while _remote_psql(settings, host, port, query) != "streaming":
        if _postmaster_pid(settings["data_dir"]) is None or time.monotonic() > deadline:
            raise CommandExecutionError(
                f"{settings['node_name']} started as a standby of {host}:{port} but does not "
                f"stream from it after {wait} s{_log_tail(settings)}"
            )
        time.sleep(_POLL_SECONDS)


def rejoin(primary, wait=120):
    """
    Turn this stopped node (typically a former primary) into a streaming
    standby of ``primary``, as cheaply as it safely can:

    - ``none``: its WAL is part of the primary's history (it was shut down
      cleanly before the primary's timeline left it): only configure it;
    - ``rewind``: pg_rewind from the primary (needs wal_log_hints or data
      checksums here);
    - ``basebackup``: a fresh copy of the primary, when the clusters differ or
      rewinding is impossible or fails.

    Then it makes sure this node's replication slot exists on the primary,
    writes standby.signal, primary_conninfo (application_name is node_name)
    and primary_slot_name, removes any fence marker, starts the server and
    waits until the primary shows it streaming. Refuses a running node.

    primary
        The primary's address: ``HOST`` or ``HOST:PORT`` (default port: this
        node's).
    wait
        Seconds to wait, once started, for it to stream.

    Returns ``method``, ``seconds`` (all of it), ``rewind_seconds`` and/or
    ``basebackup_seconds``, ``rewind_error`` when a failed rewind fell back to
    a base backup, and ``timeline``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 pg_replication.rejoin primary=airflow-server2
        salt airflow-server1 pg_replication.rejoin primary=10.11.12.20:5432 wait=300
    """
    settings = _settings()
    state = _status(settings)
    if state["running"]:
        raise CommandExecutionError(
            f"{settings['node_name']} is running as {state['role']}; rejoin needs it stopped: "
            "stop or fence it first (pg_replication.fence)"
        )
    started = time.monotonic()
    host, port = _parse_node_address(primary, settings["port"])
    identity = _identify_system(settings, host, port)
    control = _controldata(settings)
    cleanly_shut_down = control["Database cluster state"] == "shut down"
    method = _choose_rejoin_method(
        same_cluster=control["Database system identifier"] == identity["system_identifier"],
        local_timeline=int(control["Latest checkpoint's TimeLineID"]),
        local_last_lsn=(_parse_lsn(control["Latest checkpoint location"])
                        if cleanly_shut_down else None),
        primary_timelines=_primary_timelines(settings, host, port, identity),
        rewind_possible=(control.get("wal_log_hints setting") == "on"
                         or control.get("Data page checksum version", "0") != "0"),
    )
    log.info(
        "pg_replication: rejoining %s to %s:%s by %s", settings["node_name"], host, port, method
    )
    slot = _slot_name(settings["node_name"])
    _ensure_slot(settings, host, port, slot)
    rejoined = {}
    if method == "rewind":
        _check_control_timeline(settings, host, port, identity["timeline"])
        rewind_started = time.monotonic()
        result = _rewind(settings, host, port)
        rejoined["rewind_seconds"] = round(time.monotonic() - rewind_started, 3)
        if result["retcode"] != 0:
            log.warning(
                "pg_replication: pg_rewind failed, taking a base backup: %s", _output_of(result)
            )
            rejoined["rewind_error"] = (_output_of(result).splitlines() or ["no output"])[-1]
            method = "basebackup"
    if method == "basebackup":
        backup_started = time.monotonic()
        _replace_with_base_backup(settings, host, port, slot)
        rejoined["basebackup_seconds"] = round(time.monotonic() - backup_started, 3)
    _configure_standby(settings, host, port, slot)
    _start(settings)
    _wait_for_streaming(settings, host, port, wait)
    rejoined.update({
        "method": method,
        "seconds": round(time.monotonic() - started, 3),
        "timeline": _status(settings)["timeline"],
    })
    log.info("pg_replication: rejoined %s: %s", settings["node_name"], rejoined)
    return rejoined

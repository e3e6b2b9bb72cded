"""
A PostgreSQL data directory and the server running on it: the files kept
there (the standby configuration, the fence marker, the timeline history,
the WAL files), what a rejoin keeps beside it of what it discards, the
postmaster's pid and its processes' titles, and a node's status as
``pg_replication.status`` returns it. Only the standard library reads and
writes them, so that the execution module and the start guards share them;
running PostgreSQL's programs is the callers' part.
"""

import datetime
import json
import os
import re
import shutil
import tempfile

from ha_core.errors import Refused
from ha_core.pg_facts import (
    DEFAULT_PORT,
    conf_value,
    format_lsn,
    parse_conninfo,
    parse_timeline_history,
    set_conf_values,
)

# In the data directory: the fence marker (JSON: fenced_at, reason), the
# operator's release of a fenced node (JSON: generation; the start guard
# honours it once), the file that makes PostgreSQL start in recovery, and
# what ALTER SYSTEM writes.
FENCE_MARKER = "pg_replication.fenced"
RELEASE = "pg_replication.released"
STANDBY_SIGNAL = "standby.signal"
AUTO_CONF = "postgresql.auto.conf"


def timeline_start(data_dir, timeline):
    """
    Return the LSN (``"X/Y"``) where ``timeline`` begins, from its history
    file in the data directory's pg_wal (the promoted server wrote it).
    """
    history = read_text(os.path.join(data_dir, "pg_wal", f"{timeline:08X}.history"))
    return format_lsn(parse_timeline_history(history)[-1][1])


def history_timelines(data_dir):
    """
    Return the timelines whose history files are in the data directory's
    pg_wal (a standby fetches them from its primary).
    """
    names = os.listdir(os.path.join(data_dir, "pg_wal"))
    return [int(name[:8], 16) for name in names if re.fullmatch(r"[0-9A-F]{8}\.history", name)]


def wal_file_names(data_dir):
    """Return the names of the entries of the data directory's pg_wal, sorted."""
    return sorted(os.listdir(os.path.join(data_dir, "pg_wal")))


def timeline_history(data_dir, timeline):
    """
    Return the entries of ``timeline``'s history file in the data directory's
    pg_wal (pg_facts.parse_timeline_history): [] for timeline 1, which has
    none, and None when the file is missing.
    """
    if timeline == 1:
        return []
    text = read_text(os.path.join(data_dir, "pg_wal", f"{timeline:08X}.history"))
    return None if text is None else parse_timeline_history(text)


def discarded_path(data_dir, now=None):
    """
    Return a path that does not exist yet, beside the data directory, for
    what a rejoin discards: ``<data_dir>.discarded-<UTC time>``, with ``-2``,
    ``-3``... added when that exists. ``now``: an aware datetime (default:
    the current UTC time).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = f"{os.path.normpath(data_dir)}.discarded-{stamp}"
    candidate, number = path, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{path}-{number}"
    return candidate


def _private_dir(path, uid, gid):
    os.mkdir(path, 0o700)
    os.chown(path, uid, gid)
    os.chmod(path, 0o700)


def keep_wal(data_dir, names, kept, uid, gid):
    """
    Copy the files ``names`` of the data directory's pg_wal into
    ``kept/pg_wal``, creating ``kept`` (which must not exist) and it, owned by
    uid:gid, 0700; the copies are owned by uid:gid, 0600, and on disk (synced)
    when this returns. Return ``kept``.
    """
    source = os.path.join(data_dir, "pg_wal")
    target = os.path.join(kept, "pg_wal")
    _private_dir(kept, uid, gid)
    _private_dir(target, uid, gid)
    for name in names:
        copy = os.path.join(target, name)
        shutil.copyfile(os.path.join(source, name), copy)
        os.chown(copy, uid, gid)
        os.chmod(copy, 0o600)
        with open(copy, "rb") as stream:
            os.fsync(stream.fileno())
    for directory in (target, kept, os.path.dirname(kept)):
        _fsync_dir(directory)
    return kept


def _fsync_dir(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def postmaster_pid(data_dir):
    """
    Return the pid of the postmaster running on data_dir, or None.
    postmaster.pid outlives a crash, and its pid may be another process's
    since: it counts only if that process is a postgres in this data directory.
    """
    text = read_text(os.path.join(data_dir, "postmaster.pid"))
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


def child_titles(pid):
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


def read_text(path):
    """Return the text of a file, or None when it does not exist."""
    try:
        with open(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def write_file(path, text, uid, gid):
    """
    Replace a file atomically (PostgreSQL, or a start guard, reads the old
    file or the new one, never half of one), owned by uid:gid, mode 0600.
    """
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


def standby_of(data_dir):
    """
    Return ``{"host", "port"}`` of the primary a node starts as a standby of
    (primary_conninfo, when standby.signal exists), or None.
    """
    if not os.path.exists(os.path.join(data_dir, STANDBY_SIGNAL)):
        return None
    conninfo = conf_value(read_text(os.path.join(data_dir, AUTO_CONF)) or "", "primary_conninfo")
    if not conninfo:
        return None
    params = parse_conninfo(conninfo)
    return {
        "host": params.get("host") or params.get("hostaddr"),
        "port": int(params.get("port", DEFAULT_PORT)),
    }


def configure_standby(data_dir, primary_conninfo, slot, uid, gid):
    """
    Make a stopped server start as a standby: primary_conninfo and
    primary_slot_name set in postgresql.auto.conf (the server is down, so
    ALTER SYSTEM is not available), standby.signal written, any fence marker
    removed.
    """
    auto_conf = os.path.join(data_dir, AUTO_CONF)
    text = set_conf_values(read_text(auto_conf) or "",
                           {"primary_conninfo": primary_conninfo, "primary_slot_name": slot})
    write_file(auto_conf, text, uid, gid)
    write_file(os.path.join(data_dir, STANDBY_SIGNAL), "", uid, gid)
    remove_fence(data_dir)


def replace_data_dir(data_dir, uid, gid, fill, keep=None):
    """
    Replace a data directory with an empty one, owned by uid:gid, 0700, that
    ``fill(data_dir)`` fills (pg_basebackup). The old one is moved aside and
    put back when ``fill`` raises; after success it is deleted or, with
    ``keep`` (a path that must not exist, on the same file system), moved
    there. Return the kept path, or None.
    """
    data_dir = os.path.normpath(data_dir)
    aside = data_dir + ".pg_replication-old"
    if os.path.exists(aside):
        raise Refused(
            f"{aside} exists, left by an interrupted rejoin",
            fix="check whether it holds data you need, remove it, then retry",
        )
    if keep is not None and os.path.lexists(keep):
        raise Refused(f"{keep}, where the data directory it replaces was to be kept, exists",
                      now="nothing was changed", fix="move it away, then retry")
    os.rename(data_dir, aside)
    try:
        os.mkdir(data_dir, 0o700)
        os.chown(data_dir, uid, gid)
        fill(data_dir)
        os.chmod(data_dir, 0o700)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        os.rename(aside, data_dir)
        raise
    if keep is None:
        shutil.rmtree(aside)
        return None
    os.rename(aside, keep)
    return keep


def read_fence(data_dir):
    """Return the fence marker (``fenced_at``, ``reason``), or None when not fenced."""
    text = read_text(os.path.join(data_dir, FENCE_MARKER))
    return None if text is None else json.loads(text)


def write_fence(data_dir, reason, uid, gid, now=None):
    """
    Fence the server of ``data_dir``: write standby.signal, so that its next
    start, whoever starts it, comes up in recovery, then the fence marker
    saying when (``now``, an aware datetime; default: the current UTC time)
    and why, unless one exists: a node fenced again keeps its first marker.
    Return the marker in force. Stopping a running server is the caller's,
    after this.
    """
    # The signal file comes first: a marker without it would not fence.
    write_file(os.path.join(data_dir, STANDBY_SIGNAL), "", uid, gid)
    marker = read_fence(data_dir)
    if marker is None:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        marker = {"fenced_at": now.isoformat(timespec="seconds"), "reason": reason}
        write_file(os.path.join(data_dir, FENCE_MARKER), json.dumps(marker) + "\n", uid, gid)
    return marker


def read_release(data_dir):
    """Return the operator's release (``generation``), or None when there is none."""
    text = read_text(os.path.join(data_dir, RELEASE))
    return None if text is None else json.loads(text)


def remove_fence(data_dir):
    """Remove the fence marker, if any (standby.signal is the caller's)."""
    try:
        os.unlink(os.path.join(data_dir, FENCE_MARKER))
    except FileNotFoundError:
        pass


def holds_cluster(data_dir):
    """Whether the data directory holds a database cluster (its control
    file): an empty one is a server rebuilt, or wiped, that only a base
    backup or a restore fills."""
    return os.path.exists(os.path.join(data_dir, "global", "pg_control"))


def node_status(node_name, role, running, control, data_dir, server=None, now=None):
    """
    Return pg_replication.status for a node (see its documentation): its
    ``role`` (decided from these facts by pg_decisions.server_role), whether
    it is ``running``, its pg_controldata values ``control``, what its data
    directory holds, and what its ``server`` adds when it runs: a primary's
    parse_primary_status, or a standby's standby_progress. Without a
    cluster in the data directory (``control`` empty) it is stopped, with no
    timeline.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    fence = read_fence(data_dir)
    state = {
        "node_name": node_name,
        "checked_at": now.isoformat(timespec="seconds"),
        "role": role,
        "running": running,
        "cluster_state": control.get("Database cluster state"),
        "system_identifier": control.get("Database system identifier"),
        "last_checkpoint_lsn": control.get("Latest checkpoint location"),
        "fenced": fence is not None,
        "fence": fence,
        "standby_of": standby_of(data_dir),
        **(server or {}),
    }
    if not control:  # no cluster in the data directory
        state["timeline"] = None
    elif "timeline" not in state:
        # A standby's control file may still show an older timeline than the
        # one it follows: also count the history files it has fetched and the
        # segment it replays.
        state["timeline"] = max([int(control["Latest checkpoint's TimeLineID"])]
                                + history_timelines(data_dir)
                                + state.pop("recovery_timelines", []))
    return state

"""
What PostgreSQL says, parsed: LSNs, WAL file names and timelines,
``pg_controldata``, process titles, what the status queries and the
replication protocol return, libpq connection strings, ``postgresql.conf``
settings and password verifiers; and the pg_replication settings and slot
names. Text in, values out. The data directory's files are
``pg_datadir``'s, the programs' command lines ``pg_commands``'.
"""

import base64
import hashlib
import hmac
import json
import re

from ha_core.errors import InvalidInput

# libpq's and the server's default port.
DEFAULT_PORT = 5432

# The pg_replication settings (see the execution module) where none are
# configured: Debian's PostgreSQL 15 cluster "main", reached over its unix
# socket as the postgres OS user.
DEFAULT_SETTINGS = {
    "bin_dir": "/usr/lib/postgresql/15/bin",
    "data_dir": "/var/lib/postgresql/15/main",
    "conf_dir": None,
    "service": None,
    "port": DEFAULT_PORT,
    "socket_dir": "/var/run/postgresql",
    "os_user": "postgres",
    "replication_user": "replicator",
    "passfile": None,
    "node_name": None,
}


# What pg_rewind calls on its source server; granting them lets a
# non-superuser replication role be that source.
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)

_LSN = r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"
_WAL_FILE = r"[0-9A-F]{24}"


# --- Settings and names ------------------------------------------------------------


def settings(configured, minion_id):
    """
    Return the pg_replication settings: ``configured`` over DEFAULT_SETTINGS,
    ``node_name`` defaulting to the minion id, ``port`` an integer.
    """
    merged = dict(DEFAULT_SETTINGS, **(configured or {}))
    merged["node_name"] = merged["node_name"] or minion_id
    merged["port"] = int(merged["port"])
    return merged


def slot_name(node_name):
    """
    Return the replication slot name for a node: lower case, characters outside
    ``[a-z0-9_]`` replaced by ``_``, at most 63 characters (PostgreSQL's limit).
    """
    return re.sub(r"[^a-z0-9_]", "_", node_name.lower())[:63]


# --- WAL positions, files and timelines --------------------------------------------


def parse_lsn(text):
    """
    Return the integer position of an LSN written as ``"X/Y"`` (hexadecimal).
    """
    if not re.fullmatch(_LSN, text.strip()):
        raise InvalidInput(f"not an LSN: {text!r}")
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position):
    """
    Return an integer WAL position written as PostgreSQL writes LSNs, ``"X/Y"``.
    """
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def lag_bytes(primary_lsn, received_lsn):
    """
    Return how many bytes of WAL a primary at ``primary_lsn`` has that a
    standby that received up to ``received_lsn`` has not (None when either
    is unknown).
    """
    if primary_lsn is None or received_lsn is None:
        return None
    return max(0, parse_lsn(primary_lsn) - parse_lsn(received_lsn))


def wal_file_start(wal_file, segment_size):
    """
    Return the timeline and the LSN where a WAL segment file begins, from its
    name (``TTTTTTTTXXXXXXXXYYYYYYYY``).
    """
    timeline, log_id, segment = (int(wal_file[i : i + 8], 16) for i in (0, 8, 16))
    return timeline, (log_id << 32) + segment * segment_size


def wal_file_name(timeline, lsn, segment_size):
    """
    Return the name of the WAL segment file of ``timeline`` that holds the
    position ``lsn`` (an integer): wal_file_start's converse.
    """
    segment = lsn // segment_size
    per_log_id = 0x100000000 // segment_size
    return f"{timeline:08X}{segment // per_log_id:08X}{segment % per_log_id:08X}"


def newest_wal_timeline(names):
    """
    Return the highest timeline among the WAL segment files in ``names`` (the
    entries of a pg_wal directory), or None when there is none: a server
    writes, and a standby receives, only on its newest timeline.
    """
    timelines = [int(name[:8], 16) for name in names if re.fullmatch(_WAL_FILE, name)]
    return max(timelines, default=None)


def format_lsn_range(start, end):
    """Return the WAL range from ``start`` to ``end`` (integers) as ``"X/Y-X/Y"``."""
    return f"{format_lsn(start)}-{format_lsn(end)}"


def parse_timeline_history(text):
    """
    Return the entries of a timeline history file, oldest first, as
    ``(timeline, switch_lsn)``: the primary left ``timeline`` at ``switch_lsn``.
    """
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if line.strip() and not line.startswith("#") and len(fields) >= 2:
            entries.append((int(fields[0]), parse_lsn(fields[1])))
    return entries


def primary_timelines(identity, history_reply=None):
    """
    Return a primary's timelines as pg_decisions.choose_rejoin_method takes
    them, from its IDENTIFY_SYSTEM (parse_identify_system) and, past timeline
    1, its reply to TIMELINE_HISTORY.
    """
    current = [(identity["timeline"], identity["flush_lsn"])]
    if history_reply is None:
        return current
    # The reply is "filename|content"; the file name contains no "|".
    return parse_timeline_history(history_reply.partition("|")[2]) + current


# --- What the programs, the processes and the servers say --------------------------


def parse_controldata(text):
    """
    Return pg_controldata's output as a dict of its labels and values (strings).
    """
    values = {}
    for line in text.splitlines():
        label, separator, value = line.partition(":")
        if separator:
            values[label.strip()] = value.strip()
    return values


def parse_waldump_last_record(stderr):
    """
    Return the LSN of the last record pg_waldump read before the end of the
    WAL, from its closing error (``error in WAL record at 0/1500718: invalid
    record length at 0/1500790: wanted 24, got 0``), or None when it read none.
    """
    match = re.search(rf"error in WAL record at ({_LSN})", stderr)
    return match.group(1) if match else None


def parse_waldump_end(stderr, segment_size):
    """
    Return where the WAL that pg_waldump read (with no ``--end``) ends, as an
    integer: the position after the last record it could read, which is where
    the record it stopped at begins (``invalid record length at 0/1500790``),
    the page whose header it could not read (``invalid magic number 0000 in
    log segment 000000010000000000000004, offset 0``), or the segment file it
    could not find; None when it read no record at all. When a record was
    torn across a page or a file, this ends the WAL after its first part:
    an upper bound, never less than what the node has.
    """
    missing = re.search(rf'could not find file "({_WAL_FILE})"', stderr)
    if missing:
        return wal_file_start(missing.group(1), segment_size)[1]
    stopped = re.search(rf"error in WAL record at {_LSN}: (.*)", stderr)
    if not stopped:
        return None
    message = stopped.group(1)
    page = re.search(rf"segment ({_WAL_FILE}),(?: LSN {_LSN},)? offset (\d+)", message)
    if page:
        return wal_file_start(page.group(1), segment_size)[1] + int(page.group(2))
    positions = re.findall(_LSN, message)
    return parse_lsn(positions[-1]) if positions else None


def parse_walreceiver_title(title):
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


def parse_startup_title(title):
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


def standby_progress(titles, control, last_record):
    """
    Return what a running standby has received and replayed, without SQL:
    ``wal_receiver`` and ``recovery`` (its WAL receiver's and its startup
    process's titles, parsed), ``received_lsn``, ``replayed_lsn`` (a lower
    bound: the start of the segment being replayed or the minimum recovery
    point) and ``recovery_timelines`` (the timelines recovery shows).

    titles
        The process titles of the standby's postmaster's children.
    control
        Its pg_controldata values (parse_controldata).
    last_record
        ``last_record(timeline, start_lsn)``: where the last complete record
        in its pg_wal begins, reading from start_lsn (pg_waldump), or None;
        asked only when the WAL receiver shows no position.
    """
    wal_receiver = startup = None
    for title in titles:
        wal_receiver = wal_receiver or parse_walreceiver_title(title)
        startup = startup or parse_startup_title(title)
    timeline_text = control.get("Min recovery ending loc's timeline")
    timelines = [int(timeline_text) if timeline_text and timeline_text.isdigit() else 0]
    replayed = [parse_lsn(control.get("Minimum recovery ending location", "0/0"))]
    received = wal_receiver["lsn"] if wal_receiver else None
    if startup and startup["wal_file"]:
        segment_size = int(control["Bytes per WAL segment"])
        timeline, segment_start = wal_file_start(startup["wal_file"], segment_size)
        timelines.append(timeline)
        replayed.append(segment_start)
        if received is None:
            # What was replayed was received, and a lower bound beats none.
            received = last_record(timeline, max(replayed)) or format_lsn(max(replayed))
    return {
        "wal_receiver": wal_receiver,
        "received_lsn": received,
        "replayed_lsn": format_lsn(max(replayed)),
        "recovery": startup,
        "recovery_timelines": timelines,
    }


def parse_primary_status(text):
    """
    Return a primary's ``current_lsn``, ``standbys``, ``slots`` and
    ``timeline`` (from its current WAL file's name) from the output of
    PRIMARY_STATUS_SQL.
    """
    state = json.loads(text)
    state["timeline"] = int(state.pop("current_wal_file")[:8], 16)
    return state


def parse_identify_system(row):
    """
    Return ``system_identifier``, ``timeline`` and ``flush_lsn`` (an integer)
    from the replication command IDENTIFY_SYSTEM's row, as psql prints it.
    """
    system_identifier, timeline, flush_lsn = row.split("|")[:3]
    return {
        "system_identifier": system_identifier,
        "timeline": int(timeline),
        "flush_lsn": parse_lsn(flush_lsn),
    }


# --- Connection strings, configuration files, verifiers ----------------------------


def format_conninfo(params):
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


def parse_conninfo(conninfo):
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


def conf_value(text, key):
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


def set_conf_values(text, values):
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


def scram_password_matches(verifier, password):
    """
    True when ``verifier`` (pg_authid.rolpassword) is the SCRAM-SHA-256
    verifier of ``password``; False for any other or missing verifier.
    """
    try:
        method, rest = verifier.split("$", 1)
        iterations_salt, keys = rest.split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
    except (AttributeError, ValueError):
        return False
    if method != "SCRAM-SHA-256":
        return False
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    expected_stored = hashlib.sha256(client_key).digest()
    expected_server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hmac.compare_digest(
        expected_stored, base64.b64decode(stored_key)
    ) and hmac.compare_digest(expected_server, base64.b64decode(server_key))

"""
What Redis' files and INFO say: a configuration file's directives and
``requirepass``; the role file that Salt and the redis_replication module
write (``replicaof HOST PORT``, or nothing for a master) and the role it
gives; ``INFO replication`` and what it tells of a node and its replicas.

A role is ``("master", None)`` or ``("replica", (host, port))``. Parsers take
text; the one writer here, of the role file, touches only that file
(``os``), so that the execution module and the start guard can share it.
"""

import contextlib
import os
import re
import stat
import tempfile

from ha_core.errors import InvalidInput

ROLE_FILE_HEADER = (
    "# This Redis node's replication role, written by the redis_replication\n"
    "# Salt execution module (promote, replicate_from, save_role) and included\n"
    "# last by the main configuration file. A master has no replicaof line.\n"
    "# Change roles with the module rather than by editing this file.\n"
)
# A host as it can stand unquoted in a configuration file.
PLAIN_HOST = re.compile(r"[^\s\"'\\]+")
_NEW_ROLE_FILE_MODE = 0o644
_CONFIG_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}


# --- Configuration files -----------------------------------------------------------


def split_config_line(line):
    """
    Split one line of a Redis configuration file into its arguments the way
    redis-server does (sdssplitargs): inside "double quotes" \\xHH, \\n, \\r,
    \\t, \\b, \\a and backslash-escaped characters; inside 'single quotes'
    only \\'. Raises InvalidInput on unbalanced quotes.
    """
    args = []
    pos = 0
    while True:
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos == len(line):
            return args
        quote = line[pos] if line[pos] in "\"'" else None
        if quote:
            pos += 1
        arg = bytearray()
        while True:
            if pos == len(line):
                if quote:
                    raise InvalidInput("unbalanced quotes")
                break
            char = line[pos]
            if quote is None and char.isspace():
                break
            if quote == char:
                pos += 1
                if pos < len(line) and not line[pos].isspace():
                    raise InvalidInput("a closing quote must be followed by a space")
                break
            hex_escape = re.match(r"\\x([0-9a-fA-F]{2})", line[pos : pos + 4])
            if quote == '"' and hex_escape:
                arg.append(int(hex_escape.group(1), 16))
                pos += 4
                continue
            if quote == '"' and char == "\\" and pos + 1 < len(line):
                char = _CONFIG_ESCAPES.get(line[pos + 1], line[pos + 1])
                pos += 1
            elif quote == "'" and line[pos : pos + 2] == "\\'":
                char = "'"
                pos += 1
            arg += char.encode()
            pos += 1
        args.append(arg.decode())


def config_directives(text, path):
    """
    Yield (line number, arguments) for each directive of a Redis
    configuration file's text, skipping blank lines and comments. A line
    that does not parse raises InvalidInput naming it by number only, since
    it may hold a password.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield number, split_config_line(line)
        except InvalidInput as exc:
            raise InvalidInput(f"Cannot parse line {number} of {path}: {exc}")


def requirepass_from_config(text, path):
    """
    Return the ``requirepass`` of a Redis configuration file's text (the last
    one wins, as in redis-server); InvalidInput when the file sets none.
    """
    password = None
    for number, args in config_directives(text, path):
        if args[0].lower() != "requirepass":
            continue
        if len(args) != 2:
            raise InvalidInput(
                f"requirepass on line {number} of {path} must have one argument",
                fix="quote a password that contains spaces",
            )
        password = args[1]
    if not password:
        raise InvalidInput(f"{path} sets no requirepass")
    return password


# --- The role file -----------------------------------------------------------------


def role_file_content(role):
    """
    Return the text of a role file that makes redis-server take role;
    InvalidInput when the master's host could not stand in it unquoted.
    """
    kind, master = role
    if kind == "master":
        return ROLE_FILE_HEADER
    host, port = master
    if not PLAIN_HOST.fullmatch(host):
        raise InvalidInput(
            f"Cannot write the master host {host!r} to the role file: a host must "
            "not be empty nor contain spaces, quotes or backslashes"
        )
    return f"{ROLE_FILE_HEADER}replicaof {host} {int(port)}\n"


def role_from_role_file(text, path):
    """
    Return the role a role file's text gives redis-server. As in
    redis-server, the last replicaof (or its old name slaveof) wins and
    ``replicaof no one`` means a master; other directives do not bear on the
    role and are ignored. Raises InvalidInput when the file is not one
    redis-server would load.
    """
    role = ("master", None)
    for number, args in config_directives(text, path):
        if args[0].lower() not in ("replicaof", "slaveof"):
            continue
        if len(args) != 3:
            raise InvalidInput(
                f"{args[0]} on line {number} of {path} must have two arguments "
                "(HOST PORT, or no one)"
            )
        host, port = args[1:]
        if (host.lower(), port.lower()) == ("no", "one"):
            role = ("master", None)
        elif port.isdigit() and 0 < int(port) < 65536:
            role = ("replica", (host, int(port)))
        else:
            raise InvalidInput(f"{args[0]} on line {number} of {path} has {port!r} as its port")
    return role


def save_role_file(path, role):
    """
    Write the role file at path for role unless it already holds exactly
    that content; return whether it changed. The file is replaced atomically
    (redis-server reads the old file or the new one, never half of one) and
    keeps its owner, group and mode (a new one gets 0644). Raises OSError
    when it cannot be written, InvalidInput as role_file_content does.
    """
    content = role_file_content(role)
    directory = os.path.dirname(path) or "."
    temp_path = None
    try:
        try:
            with open(path, "rb") as role_file:
                if role_file.read() == content.encode():
                    return False
            existing = os.stat(path)
        except FileNotFoundError:
            existing = None
        descriptor, temp_path = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}."
        )
        with os.fdopen(descriptor, "w") as temp_file:
            temp_file.write(content)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        if existing is None:
            os.chmod(temp_path, _NEW_ROLE_FILE_MODE)
        else:
            os.chown(temp_path, existing.st_uid, existing.st_gid)
            os.chmod(temp_path, stat.S_IMODE(existing.st_mode))
        os.replace(temp_path, path)
        temp_path = None
        # The rename is durable only once the directory is on disk too.
        directory_descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)
    finally:
        if temp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
    return True


# --- INFO replication --------------------------------------------------------------


def parse_replication_info(text):
    """
    Parse the text of ``INFO replication`` into a dict of its fields (strings),
    with the ``slaveN`` lines as dicts, in order, under ``replicas``.
    """
    info = {"replicas": []}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        if re.fullmatch(r"slave\d+", key):
            info["replicas"].append(dict(item.split("=", 1) for item in value.split(",")))
        else:
            info[key] = value
    return info


def runtime_role(info):
    """
    Return the role of the node with this parsed INFO replication.
    """
    if info["role"] == "master":
        return ("master", None)
    return ("replica", (info["master_host"], int(info["master_port"])))


def role_summary(info):
    """
    Describe the role of the node with this parsed INFO replication: "a
    master at offset N" or "a replica of HOST:PORT".
    """
    if info["role"] == "master":
        return f"a master at offset {info['master_repl_offset']}"
    return f"a replica of {info['master_host']}:{info['master_port']}"


def replica_lag_bytes(master_info, replica_info):
    """
    Return how many bytes of the master's replication stream the replica has
    not processed yet (0: caught up), or None when that cannot be known: the
    master's figures are missing or the two are not on the same replication
    history (for instance during a full sync).
    """
    if master_info is None or master_info.get("role") != "master":
        return None
    if master_info["master_replid"] != replica_info["master_replid"]:
        return None
    return int(master_info["master_repl_offset"]) - int(replica_info["slave_repl_offset"])


def status_from_info(info, master_info=None):
    """
    Return the replication status of a node from its parsed INFO replication
    and, for a replica, its master's (None when the master could not be
    asked): the fields of ``redis_replication.status`` but ``role_file`` and
    ``role_file_agrees``.
    """
    if info["role"] == "master":
        offset = int(info["master_repl_offset"])
        return {
            "role": "master",
            "master_replid": info["master_replid"],
            "master_repl_offset": offset,
            "connected_replicas": [
                {
                    "ip": replica["ip"],
                    "port": int(replica["port"]),
                    "state": replica["state"],
                    "offset": int(replica["offset"]),
                    "lag_bytes": offset - int(replica["offset"]),
                    "lag_seconds": int(replica["lag"]),
                }
                for replica in info["replicas"]
            ],
        }
    link_down_seconds = info.get("master_link_down_since_seconds")
    return {
        "role": "replica",
        "master_host": info["master_host"],
        "master_port": int(info["master_port"]),
        "master_link_status": info["master_link_status"],
        # redis-server reports -1 when the link has never been up.
        "master_link_down_seconds": (
            int(link_down_seconds) if link_down_seconds not in (None, "-1") else None
        ),
        "master_replid": info["master_replid"],
        "master_repl_offset": (
            int(master_info["master_repl_offset"])
            if master_info is not None and master_info.get("role") == "master"
            else None
        ),
        "replica_repl_offset": int(info["slave_repl_offset"]),
        "lag_bytes": replica_lag_bytes(master_info, info),
    }


def switch_offset(info):
    """
    Return the replication offset at which a promoted node stopped following
    its master: redis-server records the next one as second_repl_offset.
    """
    second = int(info["second_repl_offset"])
    return second - 1 if second > 0 else int(info["master_repl_offset"])


def find_replica_entry(replicas, host, port):
    """
    Return the entry of a status's ``connected_replicas`` that is the node
    at host:port, or None.
    """
    for replica in replicas:
        if replica["ip"] == host and replica["port"] == port:
            return replica
    return None


def replica_online(replicas, ip, port):
    """True when the master lists the replica ip:port as online."""
    return any(r["ip"] == ip and r["port"] == port and r["state"] == "online" for r in replicas)


def follows(info, master_host, master_port):
    """
    Whether the node with this parsed INFO replication is a replica of
    master_host:master_port with its link up.
    """
    return (
        info["role"] == "slave"
        and info["master_host"] == master_host
        and int(info["master_port"]) == master_port
        and info["master_link_status"] == "up"
    )

"""
Inspect and operate the replication of this node's Redis (the Celery broker):
one master and its replica.

:depends: redis Python library (redis-py), Redis 6.2 or later on the nodes
    (``FAILOVER``).
:configuration: Settings are read with ``config.get`` (minion configuration
    or pillar) under ``redis_replication``; every key is optional:

    .. code-block:: yaml

        redis_replication:
          host: 127.0.0.1              # where this node's Redis answers locally
          port: 6379
          password_file: /etc/redis/redis.conf
          role_file: /etc/redis/replication.conf
          announce_host: 10.11.12.10   # how the other nodes reach this one

    ``password_file`` names a Redis configuration file whose ``requirepass``
    is the password; ``password`` gives it directly and takes precedence.
    The same password authenticates to every node: in this product each
    node's ``masterauth`` is the ``requirepass`` of all of them.

    ``announce_host`` defaults to ``host``. It is how this node is recognised
    among its master's replicas and the address other nodes are told to
    follow.

    ``role_file`` is where this node's role is persisted: a file that the
    main Redis configuration file includes last and that holds only
    ``replicaof HOST PORT`` (a replica) or no ``replicaof`` at all (a
    master). Salt creates it with the initial role; from then on this module
    rewrites it whenever it switches this node's role, so that the role
    survives a restart of redis-server. The module never uses
    ``CONFIG REWRITE``: it would copy every setting into the main
    configuration file, where they would override Salt's later edits.

    A node given as an argument (``master=``) is ``HOST`` or ``HOST:PORT``;
    the port defaults to this node's.
"""

import contextlib
import logging
import os
import re
import stat
import tempfile
import time

import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_replication"

_DEFAULT_SETTINGS = {
    "host": "127.0.0.1",
    "port": 6379,
    "password": None,
    "password_file": None,
    "announce_host": None,
    "role_file": "/etc/redis/replication.conf",
}
# Long enough for a busy server to answer, short enough that status() and
# promote() do not hang on a node that has lost power.
_CONNECT_TIMEOUT_SECONDS = 3
_POLL_SECONDS = 0.05
# Once the master's FAILOVER TIMEOUT has run out it has either aborted or
# handed over; what is left (the old master's PSYNC to us) is this quick.
_HANDOVER_GRACE_SECONDS = 5
_CONFIG_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
_ROLE_FILE_HEADER = (
    "# This Redis node's replication role, written by the redis_replication\n"
    "# Salt execution module (promote, replicate_from, save_role) and included\n"
    "# last by the main configuration file. A master has no replicaof line.\n"
    "# Change roles with the module rather than by editing this file.\n"
)
# A host as it can stand unquoted in a configuration file.
_PLAIN_HOST = re.compile(r"[^\s\"'\\]+")
_NEW_ROLE_FILE_MODE = 0o644


def __virtual__():
    """
    Only load when the redis Python library is installed.
    """
    if not HAS_REDIS:
        return (
            False,
            "The redis_replication execution module cannot be loaded: "
            "the redis Python library (redis-py) is not installed.",
        )
    return __virtualname__


def _split_config_line(line):
    """
    Split one line of a Redis configuration file into its arguments the way
    redis-server does (sdssplitargs): inside "double quotes" \\xHH, \\n, \\r,
    \\t, \\b, \\a and backslash-escaped characters; inside 'single quotes'
    only \\'. Raises ValueError on unbalanced quotes.
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
                    raise ValueError("unbalanced quotes")
                break
            char = line[pos]
            if quote is None and char.isspace():
                break
            if quote == char:
                pos += 1
                if pos < len(line) and not line[pos].isspace():
                    raise ValueError("a closing quote must be followed by a space")
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


def _config_directives(text, path, advice=""):
    """
    Yield (line number, arguments) for each directive of a Redis
    configuration file's text, skipping blank lines and comments. A line
    that does not parse raises CommandExecutionError naming it by number
    only, since it may hold a password.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield number, _split_config_line(line)
        except ValueError as exc:
            raise CommandExecutionError(
                f"Cannot parse line {number} of {path}: {exc}. {advice}".rstrip()
            )


def _requirepass_from_config(text, path):
    """
    Return the ``requirepass`` of a Redis configuration file's text (the last
    one wins, as in redis-server), or raise CommandExecutionError.
    """
    password = None
    for number, args in _config_directives(
        text, path, "Fix the file or set redis_replication:password instead of password_file."
    ):
        if args[0].lower() != "requirepass":
            continue
        if len(args) != 2:
            raise CommandExecutionError(
                f"requirepass on line {number} of {path} must have one argument; "
                "quote a password that contains spaces."
            )
        password = args[1]
    if not password:
        raise CommandExecutionError(
            f"{path} sets no requirepass. Point redis_replication:password_file "
            "at the Redis configuration file that does, or set "
            "redis_replication:password."
        )
    return password


def _role_file_content(role):
    """
    Return the text of a role file that makes redis-server take role:
    ("master", None) or ("replica", (host, port)).
    """
    kind, master = role
    if kind == "master":
        return _ROLE_FILE_HEADER
    host, port = master
    if not _PLAIN_HOST.fullmatch(host):
        raise CommandExecutionError(
            f"Cannot write the master host {host!r} to the role file: a host must "
            "not be empty nor contain spaces, quotes or backslashes."
        )
    return f"{_ROLE_FILE_HEADER}replicaof {host} {int(port)}\n"


def _role_from_file_content(text, path):
    """
    Return the role a role file's text gives redis-server: ("master", None)
    or ("replica", (host, port)). As in redis-server, the last replicaof (or
    its old name slaveof) wins and ``replicaof no one`` means a master; other
    directives do not bear on the role and are ignored. Raises
    CommandExecutionError when the file is not one redis-server would load.
    """
    role = ("master", None)
    for number, args in _config_directives(text, path):
        if args[0].lower() not in ("replicaof", "slaveof"):
            continue
        if len(args) != 3:
            raise CommandExecutionError(
                f"{args[0]} on line {number} of {path} must have two arguments "
                "(HOST PORT, or no one)."
            )
        host, port = args[1:]
        if (host.lower(), port.lower()) == ("no", "one"):
            role = ("master", None)
        elif port.isdigit() and 0 < int(port) < 65536:
            role = ("replica", (host, int(port)))
        else:
            raise CommandExecutionError(
                f"{args[0]} on line {number} of {path} has {port!r} as its port."
            )
    return role


def _runtime_role(info):
    """
    Return the role of the node with this parsed INFO replication, in the
    form _role_from_file_content gives: ("master", None) or
    ("replica", (host, port)).
    """
    if info["role"] == "master":
        return ("master", None)
    return ("replica", (info["master_host"], int(info["master_port"])))


def _parse_replication_info(text):
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


def _replica_lag_bytes(master_info, replica_info):
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


def _status_from_info(info, master_info=None):
    """
    Build status() from this node's parsed INFO replication and, for a
    replica, its master's (None when the master could not be asked).
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
        "lag_bytes": _replica_lag_bytes(master_info, info),
    }


def _switch_offset(info):
    """
    Return the replication offset at which a promoted node stopped following
    its master: redis-server records the next one as second_repl_offset.
    """
    second = int(info["second_repl_offset"])
    return second - 1 if second > 0 else int(info["master_repl_offset"])


def _parse_node(node, default_port):
    """
    Return (host, port) of a node given as "HOST" or "HOST:PORT".
    """
    host, sep, port = str(node).partition(":")
    port = port if sep else str(default_port)
    if not _PLAIN_HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise SaltInvocationError(f"A node must be given as HOST or HOST:PORT, not {node!r}.")
    return host, int(port)


def _find_replica_entry(replicas, host, port):
    """
    Return the entry of status()["connected_replicas"] that is the node at
    host:port, or None.
    """
    for replica in replicas:
        if replica["ip"] == host and replica["port"] == port:
            return replica
    return None


def _failover_command(replicas, announce_host, port, timeout_ms):
    """
    Return (FAILOVER command to send to the master, address the master will
    follow once it has handed over) that makes this node, announce_host:port,
    the master; replicas are the master's connected replicas.
    """
    me = _find_replica_entry(replicas, announce_host, port)
    if me is not None:
        return ["FAILOVER", "TO", me["ip"], me["port"], "TIMEOUT", timeout_ms], me["ip"]
    if len(replicas) == 1 and replicas[0]["port"] == port:
        # The master sees this node under another address (another
        # interface, NAT); with one replica, FAILOVER can only pick it.
        return ["FAILOVER", "TIMEOUT", timeout_ms], replicas[0]["ip"]
    listed = ", ".join(f"{replica['ip']}:{replica['port']}" for replica in replicas) or "none"
    raise CommandExecutionError(
        f"This node ({announce_host}:{port}) is not among its master's connected "
        f"replicas ({listed}). Set redis_replication:announce_host to the "
        "address the master sees this node under."
    )


def _replica_online(replicas, ip, port):
    """True when the master lists the replica ip:port as online."""
    return any(r["ip"] == ip and r["port"] == port and r["state"] == "online" for r in replicas)


def _promotion_method(local_status, master_address, master_error, force):
    """
    Decide how to promote this node: "failover" (its master answers: hand
    over without losing an acknowledged write) or "forced" (the master is
    unreachable and force is set). Raise CommandExecutionError when this
    node must not be promoted.

    master_error is None when the master answered, else why it did not.
    """
    if local_status["role"] == "master":
        raise CommandExecutionError(
            "This node is already a master: there is nothing to promote. "
            "Run promote on the replica."
        )
    if master_error is None:
        if local_status["master_link_status"] != "up":
            raise CommandExecutionError(
                f"The master {master_address} answers but this replica's link to it "
                "is down, so a handover cannot wait for it to catch up. Repair "
                "replication (redis_replication.replicate_from) and promote again."
            )
        return "failover"
    if force:
        return "forced"
    down = local_status["master_link_down_seconds"]
    raise CommandExecutionError(
        f"The master {master_address} is unreachable ({master_error}). "
        "promote(force=True) promotes this replica anyway and may lose the writes "
        "the master acknowledged but had not yet replicated: this replica last "
        f"processed offset {local_status['replica_repl_offset']}, its link to the "
        "master has been down "
        + (f"for {down} s." if down is not None else "since it started.")
    )


def _follows(info, master_host, master_port):
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


def _settings():
    """
    Return this module's settings merged over the defaults, with the
    password resolved and announce_host defaulted.
    """
    settings = dict(_DEFAULT_SETTINGS)
    settings.update(__salt__["config.get"]("redis_replication", {}) or {})
    settings["port"] = int(settings["port"])
    settings["announce_host"] = settings["announce_host"] or settings["host"]
    if not settings["password"] and settings["password_file"]:
        path = settings["password_file"]
        try:
            with salt.utils.files.fopen(path, "r") as config_file:
                text = config_file.read()
        except OSError as exc:
            raise CommandExecutionError(
                f"Cannot read redis_replication:password_file {path}: "
                f"{exc.strerror}. It must exist and be readable by the minion."
            )
        settings["password"] = _requirepass_from_config(text, path)
    return settings


def _client(host, port, password):
    """
    Return a client of the Redis at host:port that fails fast when it does
    not answer and leaves INFO's text for _parse_replication_info.
    """
    client = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=_CONNECT_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    client.set_response_callback("INFO", lambda response, **options: response)
    return client


def _info(client):
    """
    Return the parsed INFO replication of a client's node.
    """
    return _parse_replication_info(client.info("replication"))


def _connect(host, port, password):
    """
    Return (client, parsed INFO replication, None) for the node at
    host:port, or (None, None, reason) when it cannot be reached. A node that
    answers but refuses the password is an error, not an unreachable node.
    """
    client = _client(host, port, password)
    try:
        return client, _info(client), None
    except redis.AuthenticationError as exc:
        raise CommandExecutionError(
            f"Redis at {host}:{port} refused authentication ({exc}). Check that "
            "redis_replication:password or password_file gives its requirepass."
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return None, None, str(exc) or type(exc).__name__


def _local(settings):
    """
    Return (client, parsed INFO replication) of this node's Redis.
    """
    client, info, error = _connect(settings["host"], settings["port"], settings["password"])
    if error is not None:
        raise CommandExecutionError(
            f"Cannot reach this node's Redis at {settings['host']}:{settings['port']} "
            f"({error}). Is redis-server running? Check redis_replication:host and port."
        )
    return client, info


def _role_file_agrees(path, role):
    """
    Whether the role file at path gives redis-server role when it starts;
    False, with a warning logged, when it is missing or cannot be read.
    """
    try:
        with salt.utils.files.fopen(path, "r") as role_file:
            return _role_from_file_content(role_file.read(), path) == role
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("Cannot read the role file %s (%s).", path, exc)
    except CommandExecutionError as exc:
        log.warning("%s", exc)
    return False


def _save_role_file(path, role):
    """
    Write role to the role file at path unless it already holds exactly
    that content; return whether it changed. The file is replaced
    atomically and keeps its owner, group and mode (a new one gets 0644).
    """
    content = _role_file_content(role)
    directory = os.path.dirname(path) or "."
    temp_path = None
    try:
        try:
            with salt.utils.files.fopen(path, "rb") as role_file:
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
        directory_descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)
    except OSError as exc:
        raise CommandExecutionError(
            f"Cannot write the role file {path} ({exc.strerror}). This node's Redis "
            f"is a {role[0]} now but would not be after a restart: fix the file's "
            "directory or redis_replication:role_file, then run "
            "redis_replication.save_role on this node."
        )
    finally:
        if temp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
    log.info("Saved the role %s to %s.", role[0], path)
    return True


def _status(settings, info):
    """
    Return status() for this node's parsed INFO replication, asking its
    master for its offset when this node is a replica, and whether its
    role file agrees.
    """
    master_info = None
    if info["role"] != "master":
        master_info = _connect(
            info["master_host"], int(info["master_port"]), settings["password"]
        )[1]
    return {
        **_status_from_info(info, master_info),
        "role_file": settings["role_file"],
        "role_file_agrees": _role_file_agrees(settings["role_file"], _runtime_role(info)),
    }


def _command(description, function, *args):
    """
    Run a Redis command; turn a server's refusal or a lost connection into a
    CommandExecutionError that says what was being done.
    """
    try:
        return function(*args)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"{description} failed: {exc}")


def status():
    """
    Return the replication state of this node's Redis, from INFO replication.

    On a master: ``role`` ("master"), ``master_replid``,
    ``master_repl_offset`` and ``connected_replicas``, a list of
    ``{ip, port, state, offset, lag_bytes, lag_seconds}``.

    On a replica: ``role`` ("replica"), ``master_host``, ``master_port``,
    ``master_link_status`` ("up" or "down"), ``master_link_down_seconds``
    (None while up), ``master_replid``, ``replica_repl_offset`` (the offset
    this replica has processed), and, when its master answers,
    ``master_repl_offset`` (the master's) and ``lag_bytes`` (the master's
    offset minus this replica's); both None otherwise.

    On both: ``role_file`` (its path) and ``role_file_agrees``: whether the
    role saved in the role file, which redis-server takes when it restarts,
    is the role it has now (False when the file is missing or unreadable;
    ``redis_replication.save_role`` corrects it).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_replication.status
    """
    settings = _settings()
    info = _local(settings)[1]
    return _status(settings, info)


def save_role():
    """
    Save this node's current role (from INFO replication) to its role file,
    so that redis-server keeps it when it restarts.

    Run it on the old master after a promotion: promote() saves the role of
    the node it promotes, but the old master, now a replica, is another
    host and its role file still says master.

    Returns ``role`` ("master" or "replica"), ``role_file`` (its path) and
    ``changed`` (whether the file's content changed).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 redis_replication.save_role
    """
    settings = _settings()
    role = _runtime_role(_local(settings)[1])
    return {
        "role": role[0],
        "role_file": settings["role_file"],
        "changed": _save_role_file(settings["role_file"], role),
    }


def promote(force=False, timeout=30):
    """
    Make this replica the master.

    When its master answers, the master hands over with ``FAILOVER``: it
    pauses writes, waits for this replica to have every write it
    acknowledged, swaps roles and follows this node. No acknowledged write
    is lost; if this replica does not catch up within ``timeout`` seconds
    the master aborts the handover and stays master.

    When the master does not answer, promote refuses unless ``force`` is
    True: then this node stops following it (``REPLICAOF NO ONE``) and the
    writes the master had not replicated are lost.

    Either way this node then saves its new role to its role file. The old
    master's role file is on another host and still says master: after a
    failover the caller must run ``redis_replication.save_role`` on the old
    master (the orchestration does), or a restart of its redis-server would
    make it a second master. After a forced promotion, make the old master
    follow this node with ``redis_replication.replicate_from`` once it is
    back; that saves its role.

    force
        Promote even though the master is unreachable.

    timeout
        Seconds the master may pause writes while this replica catches up.

    Returns ``promoted`` (True), ``method`` ("failover" or "forced"),
    ``offset`` (the replication offset at the switch), ``old_master``
    (HOST:PORT), ``old_master_role_saved`` (always False: see above) and
    ``seconds``.

    CLI Example:

    .. code-block:: bash

        salt airflow-server2 redis_replication.promote
        salt airflow-server2 redis_replication.promote force=True
    """
    started = time.monotonic()
    settings = _settings()
    local_client, info = _local(settings)
    local_status = _status_from_info(info)
    master_address = master_client = master_info = master_error = None
    if local_status["role"] == "replica":
        master_address = f"{local_status['master_host']}:{local_status['master_port']}"
        master_client, master_info, master_error = _connect(
            local_status["master_host"], local_status["master_port"], settings["password"]
        )
    method = _promotion_method(local_status, master_address, master_error, force)

    if method == "failover":
        _hand_over(settings, local_client, master_client, master_address, master_info, timeout)
    else:
        log.warning(
            "Promoting this replica without its unreachable master %s: writes after "
            "offset %s that the master acknowledged are lost.",
            master_address,
            local_status["replica_repl_offset"],
        )
        _command("REPLICAOF NO ONE", local_client.replicaof, "NO", "ONE")

    _save_role_file(settings["role_file"], ("master", None))
    return {
        "promoted": True,
        "method": method,
        "offset": _switch_offset(_command("INFO on this node", _info, local_client)),
        "old_master": master_address,
        "old_master_role_saved": False,
        "seconds": round(time.monotonic() - started, 3),
    }


def _hand_over(settings, local_client, master_client, master_address, master_info, timeout):
    """
    Have the master at master_address hand its role to this node with
    FAILOVER and wait until this node is master and the old master follows it.
    """
    if master_info["role"] != "master":
        raise CommandExecutionError(
            f"{master_address}, which this node follows, is itself a replica of "
            f"{master_info['master_host']}:{master_info['master_port']}. Promote "
            "a replica of the master instead."
        )
    replicas = _status_from_info(master_info)["connected_replicas"]
    command, address_seen = _failover_command(
        replicas, settings["announce_host"], settings["port"], int(timeout * 1000)
    )
    # A replica that has just (re)connected is not "online" on the master
    # until its first sync is acknowledged, and FAILOVER refuses it until then.
    deadline = time.monotonic() + timeout
    while not _replica_online(replicas, address_seen, settings["port"]):
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"This replica is not online on the master {master_address} after "
                f"{timeout} s (still synchronising?); promote again once "
                "redis_replication.status on the master lists it online."
            )
        time.sleep(_POLL_SECONDS)
        master_info = _command(f"INFO on {master_address}", _info, master_client)
        replicas = _status_from_info(master_info)["connected_replicas"]
    if settings["password"]:
        # The old master becomes this node's replica and must authenticate to it.
        _command(
            f"CONFIG SET masterauth on {master_address}",
            master_client.config_set,
            "masterauth",
            settings["password"],
        )
    _command(f"FAILOVER on {master_address}", master_client.execute_command, *command)

    deadline = time.monotonic() + timeout + _HANDOVER_GRACE_SECONDS
    while True:
        old_master = _command(f"INFO on {master_address}", _info, master_client)
        this_node = _command("INFO on this node", _info, local_client)
        if this_node["role"] == "master" and _follows(
            old_master, address_seen, settings["port"]
        ):
            return
        if old_master["role"] == "master" and old_master["master_failover_state"] == "no-failover":
            raise CommandExecutionError(
                f"The master {master_address} aborted the failover and is still the "
                f"master: this replica did not catch up within {timeout} s. Writes "
                "have resumed there; retry with a larger timeout."
            )
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"The failover from {master_address} did not complete within "
                f"{timeout + _HANDOVER_GRACE_SECONDS} s (old master: role "
                f"{old_master['role']}, failover state "
                f"{old_master.get('master_failover_state', 'n/a')}). Check both "
                "nodes with redis_replication.status."
            )
        time.sleep(_POLL_SECONDS)


def replicate_from(master, timeout=30):
    """
    Make this node a replica of ``master`` and save that to its role file.
    This node's data is replaced by the master's. When this node already
    follows ``master`` with its link up, only corrects its role file if that
    does not say so.

    master
        The node to follow: HOST or HOST:PORT (the port defaults to this
        node's). It must be a master.

    timeout
        Seconds to wait for the replication link to come up.

    Returns status() with ``changed`` and ``comment`` added.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 redis_replication.replicate_from 10.11.12.20
        salt airflow-server1 redis_replication.replicate_from 10.11.12.20:6379 timeout=60
    """
    settings = _settings()
    host, port = _parse_node(master, settings["port"])
    if port == settings["port"] and host in (settings["host"], settings["announce_host"]):
        raise SaltInvocationError(f"{host}:{port} is this node: a node cannot follow itself.")
    local_client, info = _local(settings)
    role = ("replica", (host, port))
    if _follows(info, host, port):
        comment = f"Already a replica of {host}:{port} with its link up."
        changed = not _role_file_agrees(settings["role_file"], role)
        if changed:
            _save_role_file(settings["role_file"], role)
            comment += f" Corrected the role file {settings['role_file']}, which did not say so."
        return {"changed": changed, "comment": comment, **_status(settings, info)}

    master_info, error = _connect(host, port, settings["password"])[1:]
    if error is not None:
        raise CommandExecutionError(
            f"Cannot reach {host}:{port} ({error}); this node was left unchanged."
        )
    if master_info["role"] != "master":
        raise CommandExecutionError(
            f"{host}:{port} is not a master (it follows {master_info['master_host']}:"
            f"{master_info['master_port']}). Follow the master, or promote "
            f"{host}:{port} first."
        )
    if settings["password"]:
        _command(
            "CONFIG SET masterauth", local_client.config_set, "masterauth", settings["password"]
        )
    _command(f"REPLICAOF {host} {port}", local_client.replicaof, host, port)
    _save_role_file(settings["role_file"], role)

    previously = (
        f"was a master at offset {info['master_repl_offset']}"
        if info["role"] == "master"
        else f"was a replica of {info['master_host']}:{info['master_port']}"
    )
    deadline = time.monotonic() + timeout
    info = _command("INFO on this node", _info, local_client)
    while not _follows(info, host, port):
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"This node now follows {host}:{port} but its link is still "
                f"{info['master_link_status']} after {timeout} s. Check that "
                f"{host}:{port} is reachable from this node and that its "
                "requirepass is this node's masterauth."
            )
        time.sleep(_POLL_SECONDS)
        info = _command("INFO on this node", _info, local_client)
    return {
        "changed": True,
        "comment": f"Now a replica of {host}:{port} ({previously}).",
        **_status(settings, info),
    }

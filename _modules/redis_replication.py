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
          password_file: /etc/redis/airflow-ha-auth.conf
          role_file: /etc/redis/replication.conf
          announce_host: 10.11.12.10   # how the other nodes reach this one
          service: redis-server        # its systemd unit (fence stops it)

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

import logging
import time

import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

from ha_core import addresses, errors, redis_decisions, redis_facts

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
    "service": "redis-server",
}
# A busy server has this long to answer a command. A connection gets less:
# a handshake between the servers takes under a millisecond, or a second
# with one lost SYN, while a node that has lost power never answers, and a
# forced promotion asks its old master twice (status, then promote).
_REPLY_TIMEOUT_SECONDS = 3
_CONNECT_TIMEOUT_SECONDS = 1.5
_POLL_SECONDS = 0.05
# Once the master's FAILOVER TIMEOUT has run out it has either aborted or
# handed over; what is left (the old master's PSYNC to us) is this quick.
_HANDOVER_GRACE_SECONDS = 5


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


def _settings(password_required=True):
    """
    Return this module's settings merged over the defaults, with the
    password resolved and announce_host defaulted. Unless
    password_required, a password_file that does not exist yet gives no
    password (None) rather than an error.
    """
    settings = dict(_DEFAULT_SETTINGS)
    settings.update(__salt__["config.get"]("redis_replication", {}) or {})
    settings["port"] = int(settings["port"])
    settings["announce_host"] = settings["announce_host"] or settings["host"]
    path = settings["password_file"]
    if not settings["password"] and path:
        try:
            with salt.utils.files.fopen(path, "r") as config_file:
                settings["password"] = redis_facts.requirepass_from_config(config_file.read(), path)
        except FileNotFoundError:
            if password_required:
                raise errors.OperationFailed(
                    f"Cannot read redis_replication:password_file {path}: it does not exist",
                    fix="apply the redis state, which writes it",
                )
        except OSError as exc:
            raise errors.OperationFailed(
                f"Cannot read redis_replication:password_file {path}: {exc.strerror}",
                fix="it must exist and be readable by the minion",
            )
        except errors.InvalidInput as exc:
            # The minion's configuration is wrong, not the caller's arguments:
            # Salt reports a failed command, as it always has.
            raise errors.OperationFailed(
                exc.what,
                fix=exc.fix
                or "fix it, point redis_replication:password_file at the Redis "
                "configuration file that sets requirepass, or set redis_replication:password",
            )
    return settings


def _client(host, port, password):
    """
    Return a client of the node at host:port that fails fast when its node
    does not answer (it connects at its first command).
    """
    client = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=_REPLY_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    # INFO's text, for redis_facts.parse_replication_info.
    client.set_response_callback("INFO", lambda response, **options: response)
    return client


def _connect(host, port, password):
    """
    Return (client, parsed INFO replication, None) for the node at
    host:port, or (None, None, reason) when it cannot be reached. A node that
    answers but refuses the password is an error, not an unreachable node.
    The client fails fast when its node does not answer.
    """
    client = _client(host, port, password)
    try:
        return client, _info(client), None
    except redis.AuthenticationError as exc:
        raise errors.OperationFailed(
            f"Redis at {host}:{port} refused authentication ({exc})",
            fix="check that redis_replication:password or password_file gives its requirepass",
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return None, None, str(exc) or type(exc).__name__


def _info(client):
    """
    Return the parsed INFO replication of a client's node.
    """
    return redis_facts.parse_replication_info(client.info("replication"))


def _local(settings):
    """
    Return (client, parsed INFO replication) of this node's Redis.
    """
    client, info, error = _connect(settings["host"], settings["port"], settings["password"])
    if error is not None:
        raise errors.Unreachable(
            f"Cannot reach this node's Redis at {settings['host']}:{settings['port']} ({error})",
            fix="check that redis-server is running, and redis_replication:host and port",
        )
    return client, info


def _command(description, function, *args):
    """
    Run a Redis command; turn a server's refusal or a lost connection into
    an OperationFailed that says what was being done.
    """
    try:
        return function(*args)
    except redis.RedisError as exc:
        raise errors.OperationFailed(f"{description} failed: {exc}")


def _role_file_agrees(path, role):
    """
    Whether the role file at path gives redis-server role when it starts;
    False, with a warning logged, when it is missing or cannot be read.
    """
    try:
        with salt.utils.files.fopen(path, "r") as role_file:
            return redis_facts.role_from_role_file(role_file.read(), path) == role
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("Cannot read the role file %s (%s).", path, exc)
    except errors.InvalidInput as exc:
        log.warning("%s", exc)
    return False


def _save_role_file(path, role):
    """
    Save role to the role file at path (redis_facts.save_role_file); return
    whether it changed.
    """
    try:
        changed = redis_facts.save_role_file(path, role)
    except errors.InvalidInput as exc:
        # The role is the server's, not the caller's arguments: a failed command.
        raise errors.OperationFailed(exc.what)
    except OSError as exc:
        raise errors.OperationFailed(
            f"Cannot write the role file {path} ({exc.strerror})",
            now=f"this node's Redis is a {role[0]} now but would not be after a restart",
            fix="fix the file's directory or redis_replication:role_file, then run "
            "redis_replication.save_role on this node",
        )
    if changed:
        log.info("Saved the role %s to %s.", role[0], path)
    return changed


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
    role_file = settings["role_file"]
    return {
        **redis_facts.status_from_info(info, master_info),
        "role_file": role_file,
        "role_file_agrees": _role_file_agrees(role_file, redis_facts.runtime_role(info)),
    }


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
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
    return _status(settings, _local(settings)[1])


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
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
    role = redis_facts.runtime_role(_local(settings)[1])
    return {
        "role": role[0],
        "role_file": settings["role_file"],
        "changed": _save_role_file(settings["role_file"], role),
    }


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
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
    local_status = redis_facts.status_from_info(info)
    master_address = master_client = master_info = master_error = None
    if local_status["role"] == "replica":
        master_address = f"{local_status['master_host']}:{local_status['master_port']}"
        master_client, master_info, master_error = _connect(
            local_status["master_host"], local_status["master_port"], settings["password"]
        )
    method = redis_decisions.promotion_method(local_status, master_address, master_error, force,
                                              master_info and master_info["role"])

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
        "offset": redis_facts.switch_offset(_command("INFO on this node", _info, local_client)),
        "old_master": master_address,
        "old_master_role_saved": False,
        "seconds": round(time.monotonic() - started, 3),
    }


def _hand_over(settings, local_client, master_client, master_address, master_info, timeout):
    """
    Have the master at master_address hand its role to this node with
    FAILOVER and wait until this node is master and the old master follows it.
    """
    redis_decisions.check_handover_source(master_address, master_info)
    replicas = redis_facts.status_from_info(master_info)["connected_replicas"]
    command, address_seen = redis_decisions.failover_command(
        replicas, settings["announce_host"], settings["port"], int(timeout * 1000)
    )
    # A replica that has just (re)connected is not "online" on the master
    # until its first sync is acknowledged, and FAILOVER refuses it until then.
    deadline = time.monotonic() + timeout
    while not redis_facts.replica_online(replicas, address_seen, settings["port"]):
        if time.monotonic() > deadline:
            raise errors.Refused(
                f"This replica is not online on the master {master_address} after "
                f"{timeout} s (still synchronising?)",
                fix="promote again once redis_replication.status on the master lists it online",
            )
        time.sleep(_POLL_SECONDS)
        master_info = _command(f"INFO on {master_address}", _info, master_client)
        replicas = redis_facts.status_from_info(master_info)["connected_replicas"]
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
        state = redis_decisions.handover_state(
            old_master, this_node, address_seen, settings["port"]
        )
        if state == "done":
            return
        if state == "aborted":
            raise errors.OperationFailed(
                f"The master {master_address} aborted the failover: this replica did "
                f"not catch up within {timeout} s",
                now="it is still the master and writes have resumed there",
                fix="retry with a larger timeout",
            )
        if time.monotonic() > deadline:
            raise errors.OperationFailed(
                f"The failover from {master_address} did not complete within "
                f"{timeout + _HANDOVER_GRACE_SECONDS} s",
                now=f"old master: role {old_master['role']}, failover state "
                f"{old_master.get('master_failover_state', 'n/a')}",
                fix="check both nodes with redis_replication.status",
            )
        time.sleep(_POLL_SECONDS)


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
def fence(master):
    """
    Stop this node's Redis and keep it from coming back as a master: its
    role file is saved as a replica of ``master`` first, then the service
    stops, so any later start follows ``master``. What an unplanned failover
    does to a former master whose minion still answers before it promotes
    the other node, when that node's link is down and no handover can run.
    Safe to repeat.

    master
        The node to follow when it starts again: HOST or HOST:PORT.

    Returns ``fenced`` (True), ``was_running`` and ``replica_of``
    (HOST:PORT).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 redis_replication.fence 10.11.12.20
    """
    settings = _settings()
    host, port = addresses.parse(master, settings["port"])
    _save_role_file(settings["role_file"], ("replica", (host, port)))
    was_running = bool(__salt__["service.status"](settings["service"]))
    if was_running and not __salt__["service.stop"](settings["service"]):
        raise errors.OperationFailed(f"service {settings['service']} did not stop",
                                     now="its role file says replica", fix="see its journal")
    log.info("Fenced: Redis stopped, its role file follows %s:%s.", host, port)
    return {"fenced": True, "was_running": was_running,
            "replica_of": addresses.join(host, port)}


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
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
    host, port = addresses.parse(master, settings["port"])
    if port == settings["port"] and host in (settings["host"], settings["announce_host"]):
        raise errors.InvalidInput(f"{host}:{port} is this node: a node cannot follow itself")
    role = ("replica", (host, port))
    # A master the role file cannot name is a bad argument: refuse it before any change.
    redis_facts.role_file_content(role)
    local_client, info = _local(settings)
    if redis_facts.follows(info, host, port):
        comment = f"Already a replica of {host}:{port} with its link up."
        changed = not _role_file_agrees(settings["role_file"], role)
        if changed:
            _save_role_file(settings["role_file"], role)
            comment += f" Corrected the role file {settings['role_file']}, which did not say so."
        return {"changed": changed, "comment": comment, **_status(settings, info)}

    master_info, error = _connect(host, port, settings["password"])[1:]
    redis_decisions.check_new_master(f"{host}:{port}", master_info, error)
    if settings["password"]:
        _command(
            "CONFIG SET masterauth", local_client.config_set, "masterauth", settings["password"]
        )
    _command(f"REPLICAOF {host} {port}", local_client.replicaof, host, port)
    _save_role_file(settings["role_file"], role)

    previously = redis_facts.role_summary(info)
    deadline = time.monotonic() + timeout
    info = _command("INFO on this node", _info, local_client)
    while not redis_facts.follows(info, host, port):
        if time.monotonic() > deadline:
            raise errors.OperationFailed(
                f"This node now follows {host}:{port} but its link is still "
                f"{info['master_link_status']} after {timeout} s",
                fix=f"check that {host}:{port} is reachable from this node and that its "
                "requirepass is this node's masterauth",
            )
        time.sleep(_POLL_SECONDS)
        info = _command("INFO on this node", _info, local_client)
    return {
        "changed": True,
        "comment": f"Now a replica of {host}:{port} (was {previously}).",
        **_status(settings, info),
    }


def _authenticated_client(settings, candidates):
    """
    Return (client, password) for the first of the candidate passwords
    this node's Redis accepts (None: no password at all); (None, None)
    when it does not answer. OperationFailed when it answers but refuses
    every one.
    """
    for password in candidates:
        client = _client(settings["host"], settings["port"], password)
        try:
            client.ping()
            return client, password
        except (redis.AuthenticationError, redis.ResponseError):
            # Refused (before ConnectionError: redis-py derives the one from
            # the other); a password given to a server that has none is too.
            continue
        except (redis.ConnectionError, redis.TimeoutError):
            return None, None
    raise errors.OperationFailed(
        f"Redis at {settings['host']}:{settings['port']} refused the new password, the one "
        f"in {settings['password_file']} and none at all",
        fix="set the password it runs with in its auth file (or restart it with that file), "
        "then apply the redis state again",
    )


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
def accept_password(pillar_key="redis:password", test=False):
    """
    Make this node's running Redis accept the password at the pillar key
    ``pillar_key``, without a restart: the default user gets it besides the
    one it has (clients still using the old one keep working until
    ``retire_passwords``), and a replica authenticates to its master with it
    (``masterauth``) from its next reconnection on; its link stays up. The
    password is read from the pillar on the node, so it is on no command
    line. With ``test``, only say what would change.

    Run it on every Redis node before anything uses the new password (the
    redis state does, before it writes the new password to the auth file,
    ``password_file``, which redis-server reads when it starts).

    Returns ``running`` (False when Redis does not answer: it takes the
    password from its auth file when it starts) and ``changes``, a list.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_replication.accept_password
    """
    new = __salt__["pillar.get"](pillar_key, unmask=True)
    if not isinstance(new, str) or not new:
        raise errors.InvalidInput(
            f"The pillar key {pillar_key} holds no password",
            fix="set it in the environment's secrets (pillar/<environment>/secrets.sls)",
        )
    settings = _settings(password_required=False)
    client, accepted = _authenticated_client(
        settings, redis_decisions.passwords_to_try(new, settings["password"]))
    if client is None:
        return {"running": False, "changes": []}
    if accepted == new:
        # Accepted by an earlier run, or from the auth file at start: either
        # way masterauth is the new password too.
        return {"running": True, "changes": []}
    if not test:
        _command("ACL SETUSER", client.execute_command, "ACL", "SETUSER", "default", "on",
                 ">" + new)
        _command("CONFIG SET masterauth", client.config_set, "masterauth", new)
    return {"running": True,
            "changes": ["accepts the new password, and the old one until retire_passwords",
                        "authenticates to its master with the new password"]}


@errors.reported_as(CommandExecutionError, invalid_input=SaltInvocationError)
def retire_passwords():
    """
    Make this node's Redis accept only the password of its auth file
    (``password_file``): the passwords ``accept_password`` left accepted
    are dropped at once (connections already authenticated stay). Run it
    once nothing uses them any more (``orch.rotate`` does, last).

    Returns ``retired``: how many passwords it no longer accepts.

    CLI Example:

    .. code-block:: bash

        salt -G 'roles:redis' redis_replication.retire_passwords
    """
    settings = _settings()
    client = _local(settings)[0]
    user = _command("ACL GETUSER default", client.acl_getuser, "default")
    retired = redis_decisions.passwords_to_retire(user["passwords"], settings["password"])
    if retired:
        # One command: there is no moment without a password.
        _command("ACL SETUSER", client.execute_command, "ACL", "SETUSER", "default",
                 "resetpass", ">" + settings["password"])
    return {"retired": retired}

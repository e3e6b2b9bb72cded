"""
Take a server of a load balancer's backend out and put it back through
HAProxy's runtime API (its admin socket), without a reload. The runbooks
take the Redis master out of the broker frontend, cutting its connections,
before it turns replica: see ``airflow_ha.redis_switch``.

:depends: HAProxy, its configuration with ``stats socket PATH level admin``
    (salt/haproxy writes it; the path is the haproxy state's
    ``admin_socket``, which every function takes as an argument).
"""

import socket

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "haproxy_admin"

# A server's admin state (show servers state, srv_admin_state) is a set of
# flags: forced, inherited, configured, resolver and health maintenance;
# forced and inherited drain.
_MAINTENANCE_FLAGS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_DRAIN_FLAGS = 0x08 | 0x10
_OPERATIONAL_STATES = {"0": "down", "1": "starting", "2": "up", "3": "stopping"}
_ADMIN_STATES = ("ready", "drain", "maint")
_ANSWER_SECONDS = 5


def __virtual__():
    if salt.utils.path.which("haproxy") is None:
        return (False, "haproxy_admin: HAProxy is not installed on this node; the module "
                       "drives a running HAProxy through its admin socket")
    return __virtualname__


def _command(admin_socket, command):
    """Send one runtime API command and return HAProxy's answer, stripped
    (empty when a `set` or `shutdown` command succeeded)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(_ANSWER_SECONDS)
            connection.connect(admin_socket)
            connection.sendall(command.encode() + b"\n")
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
    except OSError as error:
        raise CommandExecutionError(
            f"HAProxy's admin socket {admin_socket} did not answer {command!r}: {error}; check "
            f"that HAProxy runs and its configuration has `stats socket {admin_socket} ... "
            f"level admin` (the haproxy state's admin_socket)") from error
    return answer.decode(errors="replace").strip()


def server_states(backend, admin_socket):
    """
    Return the servers of ``backend`` as ``{server: {"address", "operational",
    "admin"}}``: operational is up, down, starting or stopping (its health
    checks; down too while in maintenance), admin is ready, drain or maint
    (what the runtime API set).

    CLI Example:

    .. code-block:: bash

        salt airflow-lb1 haproxy_admin.server_states redis-master /run/haproxy/admin.sock
    """
    answer = _command(admin_socket, f"show servers state {backend}")
    rows = [line.split() for line in answer.splitlines()[1:] if not line.startswith("#")]
    if not rows or len(rows[0]) < 7:
        raise CommandExecutionError(f"HAProxy has no backend {backend!r} with servers: {answer}")
    states = {}
    for row in rows:
        admin_flags = int(row[6])
        states[row[3]] = {
            "address": row[4],
            "operational": _OPERATIONAL_STATES.get(row[5], row[5]),
            "admin": ("maint" if admin_flags & _MAINTENANCE_FLAGS
                      else "drain" if admin_flags & _DRAIN_FLAGS else "ready"),
        }
    return states


def set_server_state(backend, servers, state, admin_socket, cut_connections=False):
    """
    Set ``servers`` (a name, or a list) of ``backend`` to ``state``:
    ``maint`` (they get no connection), ``drain`` (no new one) or ``ready``
    (their health checks decide again); with ``cut_connections``, also
    close every connection they have now. Returns their states afterwards,
    as server_states does.

    CLI Example:

    .. code-block:: bash

        salt airflow-lb1 haproxy_admin.set_server_state redis-master airflow-server1 maint \\
            /run/haproxy/admin.sock cut_connections=True
    """
    if state not in _ADMIN_STATES:
        raise SaltInvocationError(
            f"state must be one of {', '.join(_ADMIN_STATES)}, not {state!r}")
    servers = [servers] if isinstance(servers, str) else list(servers)
    for server in servers:
        commands = [f"set server {backend}/{server} state {state}"]
        if cut_connections:
            commands.append(f"shutdown sessions server {backend}/{server}")
        for command in commands:
            answer = _command(admin_socket, command)
            if answer:
                raise CommandExecutionError(f"HAProxy refused {command!r}: {answer}")
    states = server_states(backend, admin_socket)
    return {server: states[server] for server in servers}

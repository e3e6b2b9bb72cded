"""
The start guards of PostgreSQL and Redis: run by their systemd units before
every start (``ExecStartPre``, as root, before any minion), through the
program the ``start_guard`` state installs (``INSTALLED_PROGRAM``) beside a
copy of this package (``INSTALLED_CORE``).

A node about to start as the writer (a PostgreSQL primary, a Redis master)
while a peer already is the writer is a former primary that was failed over
while it was down: starting it as it is would make two. The PostgreSQL guard
fences it instead (it starts in recovery until orch.failback rejoins it);
the Redis guard makes it follow the peer. A node whose peers do not answer
starts as it is.

usage: airflow-ha-start-guard postgresql DATA_DIR PSQL PASSFILE USER HOST:PORT...
       airflow-ha-start-guard redis ROLE_FILE CONFIG_FILE REDIS_CLI HOST:PORT...
"""

import os
import subprocess
import sys

from ha_core import addresses, pg_commands, pg_datadir, pg_facts, redis_facts
from ha_core.errors import HaError

INSTALLED_PROGRAM = "/usr/local/sbin/airflow-ha-start-guard"
INSTALLED_CORE = "/usr/local/lib/airflow-ha"
_PEER_TIMEOUT_SECONDS = 10


def postgresql_action(starts_as_standby, writable_peers):
    """
    Return what the PostgreSQL guard does: ``("start", None)`` or
    ``("fence", reason)`` when the node would start as a primary while a
    peer (of ``writable_peers``) is a writable primary.
    """
    if starts_as_standby or not writable_peers:
        return "start", None
    return "fence", (f"start guard: {writable_peers[0]} is already a writable primary; this "
                     "former primary starts fenced, in recovery (rejoin it with orch.failback)")


def redis_action(role, master_peers):
    """
    Return what the Redis guard does: ``("start", None)``, or
    ``("follow", peer)`` when the role file makes the node a master while a
    peer (of ``master_peers``) is the master.
    """
    if role[0] != "master" or not master_peers:
        return "start", None
    return "follow", master_peers[0]


def _say(message):
    print(f"start guard: {message}", file=sys.stderr, flush=True)


def _ask(args, peer, **kwargs):
    """Run a client program against a peer; its result, or None (and a
    journal line) when the peer does not answer in time."""
    try:
        return subprocess.run(args, capture_output=True, text=True,
                              timeout=_PEER_TIMEOUT_SECONDS, **kwargs)
    except subprocess.TimeoutExpired:
        _say(f"{peer} did not answer")
        return None


def _is_writable_primary(psql, passfile, user, peer):
    host, port = addresses.parse(peer, 5432)
    conninfo = pg_facts.format_conninfo({"host": host, "port": port, "user": user,
                                         "dbname": "postgres", "connect_timeout": 3,
                                         "passfile": passfile})
    result = _ask(pg_commands.psql_args(psql, conninfo), peer, input="select pg_is_in_recovery()")
    if result is not None and result.returncode != 0:
        # Down, a warm standby, or refusing us: a refused login is worth
        # knowing, since it blinds the guard.
        _say(f"could not ask {peer}: {result.stderr.strip()}")
    return result is not None and result.returncode == 0 and result.stdout.strip() == "f"


def _is_redis_master(redis_cli, password, peer):
    host, port = addresses.parse(peer, 6379)
    result = _ask([redis_cli, "--no-auth-warning", "-h", host, "-p", str(port), "ROLE"], peer,
                  env={"REDISCLI_AUTH": password, "PATH": os.defpath})
    if result is None:
        return False
    if result.returncode != 0 or result.stdout.startswith(("NOAUTH", "WRONGPASS", "ERR")):
        _say(f"could not ask {peer}: {(result.stderr or result.stdout).strip()}")
        return False
    return result.stdout.split("\n", 1)[0].strip() == "master"


def guard_postgresql(data_dir, psql, passfile, user, *peers):
    starts_as_standby = os.path.exists(os.path.join(data_dir, pg_datadir.STANDBY_SIGNAL))
    writable = [] if starts_as_standby else [
        peer for peer in peers if _is_writable_primary(psql, passfile, user, peer)]
    action, reason = postgresql_action(starts_as_standby, writable)
    if action == "fence":
        owner = os.stat(data_dir)
        pg_datadir.write_fence(data_dir, reason, owner.st_uid, owner.st_gid)
        print(reason, file=sys.stderr)
    return 0


def guard_redis(role_file, config_file, redis_cli, *peers):
    with open(role_file, encoding="utf-8") as stream:
        role = redis_facts.role_from_role_file(stream.read(), role_file)
    masters = []
    if role[0] == "master":
        with open(config_file, encoding="utf-8") as stream:
            password = redis_facts.requirepass_from_config(stream.read(), config_file)
        masters = [peer for peer in peers if _is_redis_master(redis_cli, password, peer)]
    action, master = redis_action(role, masters)
    if action == "follow":
        redis_facts.save_role_file(role_file, ("replica", addresses.parse(master, 6379)))
        _say(f"{master} is already the Redis master; this node follows it")
    return 0


_GUARDS = {"postgresql": (guard_postgresql, 4), "redis": (guard_redis, 3)}


def main(argv):
    """
    Run the guard ``argv[0]`` with the rest of ``argv``; return the exit
    status. A guard that fails (a file it cannot read, bad arguments) exits
    non-zero, and systemd then does not start the server: it fails closed.
    """
    guard, fixed = _GUARDS.get(argv[0] if argv else None, (None, 0))
    if guard is None or len(argv) < 1 + fixed:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return guard(*argv[1:])
    except (HaError, OSError) as error:
        _say(f"{error}; not starting. Repair it, or re-apply the highstate "
             "(salt NODE state.apply), then start the service again")
        return 1

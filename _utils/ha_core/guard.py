"""
The start guards of PostgreSQL and Redis, and the peer report they rely on:
run by systemd before every start of those servers (``ExecStartPre``, as
root, before any minion) and on every connection to the report port,
through the program the ``start_guard`` state installs
(``INSTALLED_PROGRAM``) beside a copy of this package (``INSTALLED_CORE``).

The rule: a node starts as the writer (a PostgreSQL primary, a Redis
master) only with positive evidence that it is the writer now. Its own
copy of the topology record must name it, and every other database node
must report (``ha_core.peer``) a record no newer than that copy and servers
that are, or will start as, followers. Anything less, a peer that does not
answer included, and it starts fenced: PostgreSQL in recovery (accepting no
writes), Redis as a replica. The journal says why and that
``salt-run airflow_ha.unfence`` lets the rightful writer take writes; that
command picks it by generation and timeline and leaves a release in its
data directory, which the guard honours once.

usage: airflow-ha-start-guard postgresql --node N --record COPY --key KEY --port P
                              --data-dir DIR [--peer NAME=HOST ...]
       airflow-ha-start-guard redis --node N --record COPY --key KEY --port P
                              --role-file FILE --redis-port PORT [--peer NAME=HOST ...]
       airflow-ha-start-guard report --node N --record COPY --key KEY
                              [--data-dir DIR] [--role-file FILE]
"""

import argparse
import os
import sys
import time

from ha_core import addresses, peer, pg_datadir, redis_facts
from ha_core.cluster import generation, read_record
from ha_core.errors import HaError, Unreachable

INSTALLED_PROGRAM = "/usr/local/sbin/airflow-ha-start-guard"
PATIENCE_SECONDS = 10
INSTALLED_CORE = "/usr/local/lib/airflow-ha"
UNFENCE = "salt-run airflow_ha.unfence"


# --- What a guard decides ------------------------------------------------------------


def writer_doubts(node, copy, reports, role_of):
    """
    Return why ``node`` may not start as the writer (empty: positive
    evidence that it is the writer now).

    copy
        This node's copy of the topology record (None: it has none).
    reports
        ``{peer: report}`` of every other database node, or ``{peer: why}``
        (a string) for one that did not report.
    role_of
        ``role_of(report)``: "follower" when the peer's server is, or will
        start as, a follower; else why not (for example "a writable primary").
    """
    if copy is None:
        return ["this node has no copy of the topology record"]
    if copy.get("primary") != node:
        return [f"its copy of the topology record (generation {generation(copy)}) names "
                f"{copy.get('primary')} as the primary"]
    doubts = []
    for name, report in sorted(reports.items()):
        if isinstance(report, str):
            doubts.append(f"{name} does not report ({report})")
        elif generation(report.get("record")) > generation(copy):
            doubts.append(f"{name} has a newer topology record (generation "
                          f"{generation(report.get('record'))}, primary "
                          f"{report['record'].get('primary')})")
        elif role_of(report) != "follower":
            doubts.append(f"{name} is {role_of(report)}")
    return doubts


def postgresql_role(report):
    """What a peer's PostgreSQL is to a would-be primary: "follower" when
    it runs in recovery or will start in it (standby.signal), else why not."""
    state = report.get("postgresql") or {}
    if state.get("recovery"):
        return "follower"
    if state.get("running"):
        return "a writable PostgreSQL primary"
    return "a PostgreSQL that would start as a primary"


def redis_role(report):
    """What a peer's Redis is to a would-be master: "follower" when its role
    file makes it a replica, else why not."""
    state = report.get("redis") or {}
    return "follower" if state.get("role") == "replica" else "a Redis master"


def postgresql_action(node, copy, starts_as_standby, released, reports):
    """
    Return ``("start", None)`` or ``("fence", reason)`` for PostgreSQL on
    ``node``. A node that starts as a standby is never a writer; one the
    operator released (``released``: the generation in its release, which
    must be its copy's) starts as it is.
    """
    if starts_as_standby:
        return "start", None
    if released is not None and copy is not None and released == generation(copy) \
            and copy.get("primary") == node:
        return "start", None
    doubts = writer_doubts(node, copy, reports, postgresql_role)
    if not doubts:
        return "start", None
    return "fence", (f"{node} starts fenced, in recovery: it cannot prove it is the primary: "
                     f"{'; '.join(doubts)}. When the cluster is known, run {UNFENCE}")


def redis_action(node, copy, role, reports, peer_addresses):
    """
    Return ``("start", None)`` or ``("follow", (host, port))`` for Redis on
    ``node`` whose role file gives ``role``. A would-be master without
    positive evidence follows the recorded primary when that is another
    node, else a peer: as a replica it takes no writes.
    """
    if role[0] != "master" or not peer_addresses:
        return "start", None
    if not writer_doubts(node, copy, reports, redis_role):
        return "start", None
    recorded = (copy or {}).get("primary")
    target = recorded if recorded in peer_addresses else sorted(peer_addresses)[0]
    return "follow", peer_addresses[target]


# --- What a node reports about itself ----------------------------------------------


def node_report(node, record_path, data_dir=None, role_file=None):
    """This node's report: its copy of the record, and what its PostgreSQL
    and Redis are or will start as, from their files alone."""
    report = {"node": node, "record": read_record(record_path)}
    if data_dir:
        report["postgresql"] = {
            "running": pg_datadir.postmaster_pid(data_dir) is not None,
            "recovery": os.path.exists(os.path.join(data_dir, pg_datadir.STANDBY_SIGNAL)),
            "fenced": pg_datadir.read_fence(data_dir) is not None,
            "standby_of": (pg_datadir.standby_of(data_dir) or {}).get("host"),
        }
    if role_file:
        with open(role_file, encoding="utf-8") as stream:
            role, master = redis_facts.role_from_role_file(stream.read(), role_file)
        report["redis"] = {"role": role, "master_host": master and master[0]}
    return report


# --- The programs ----------------------------------------------------------------------


def _say(message):
    print(f"start guard: {message}", file=sys.stderr, flush=True)


def _peer_reports(args):
    """Every peer's report, or why it gave none; a peer that does not
    answer is asked again for PATIENCE_SECONDS (both nodes booting at once,
    a network still coming up) before it counts as not reporting."""
    key = peer.read_key(args.key)
    reports = {}
    deadline = time.monotonic() + PATIENCE_SECONDS
    for name, host in args.peer:
        while True:
            try:
                reports[name] = peer.ask(host, args.port, key)
                break
            except Unreachable as error:
                reports[name] = str(error)
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
    return reports


def guard_postgresql(args):
    data_dir = args.data_dir
    starts_as_standby = os.path.exists(os.path.join(data_dir, pg_datadir.STANDBY_SIGNAL))
    copy = read_record(args.record)
    release = pg_datadir.read_release(data_dir)
    reports = {} if starts_as_standby else _peer_reports(args)
    action, reason = postgresql_action(args.node, copy, starts_as_standby,
                                       release and release.get("generation"), reports)
    if release is not None:
        os.unlink(os.path.join(data_dir, pg_datadir.RELEASE))  # a release is used once
    if action == "fence":
        owner = os.stat(data_dir)
        pg_datadir.write_fence(data_dir, f"start guard: {reason}", owner.st_uid, owner.st_gid)
        _say(reason)
    return 0


def guard_redis(args):
    with open(args.role_file, encoding="utf-8") as stream:
        role = redis_facts.role_from_role_file(stream.read(), args.role_file)
    reports = _peer_reports(args) if role[0] == "master" else {}
    peer_addresses = {name: (host, args.redis_port) for name, host in args.peer}
    action, master = redis_action(args.node, read_record(args.record), role, reports,
                                  peer_addresses)
    if action == "follow":
        redis_facts.save_role_file(args.role_file, ("replica", master))
        _say(f"Redis on {args.node} starts as a replica of {addresses.join(*master)}: it cannot "
             f"prove it is the master. When the cluster is known, run {UNFENCE}")
    return 0


def report(args):
    key = peer.read_key(args.key)
    peer.serve(key, lambda: node_report(args.node, args.record, args.data_dir, args.role_file),
               sys.stdin.buffer, sys.stdout.buffer)
    return 0


def _peer_argument(text):
    name, separator, host = text.partition("=")
    if not separator or not name or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=HOST")
    return name, host


def _parser():
    parser = argparse.ArgumentParser(prog="airflow-ha-start-guard", usage=__doc__.split(
        "usage: ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, function in (("postgresql", guard_postgresql), ("redis", guard_redis),
                           ("report", report)):
        command = commands.add_parser(name)
        command.set_defaults(function=function)
        for option in ("--node", "--record", "--key"):
            command.add_argument(option, required=True)
        if name != "report":
            command.add_argument("--port", type=int, required=True)
            command.add_argument("--peer", type=_peer_argument, action="append", default=[])
        command.add_argument("--data-dir", required=name == "postgresql")
        command.add_argument("--role-file", required=name == "redis")
        if name == "redis":
            command.add_argument("--redis-port", type=int, required=True)
    return parser


def main(argv):
    """
    Run the command ``argv`` names; return the exit status. A guard that
    fails (a file it cannot read, bad arguments) exits non-zero, and
    systemd then does not start the server: it fails closed.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code or 2
    try:
        return args.function(args)
    except (HaError, OSError, ValueError) as error:
        _say(f"{error}; not starting. Repair it, or re-apply the highstate "
             "(salt NODE state.apply), then start the service again")
        return 1



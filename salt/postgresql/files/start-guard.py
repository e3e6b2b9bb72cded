#!/usr/bin/python3
"""
Start guard of PostgreSQL, run by its systemd unit before every start
(managed by Salt: salt/postgresql/start_guard.sls).

A node about to start as a primary (no standby.signal) while another
database node already runs as a writable primary is a former primary that
was failed over while it was down. Starting it would make two primaries, so
it is fenced instead, as pg_replication.fence does: standby.signal and the
marker pg_replication.fenced are written, and PostgreSQL starts in recovery,
accepting no writes, until orch.failback rejoins it. A node whose peers do
not answer starts as it is.

usage: start-guard.py DATA_DIR PSQL PASSFILE USER HOST:PORT...
"""

import datetime
import json
import os
import subprocess
import sys


def writable_primary(psql, passfile, user, peer):
    host, _, port = peer.rpartition(":")
    conninfo = (f"host={host} port={port} user={user} dbname=postgres "
                f"connect_timeout=3 passfile={passfile}")
    try:
        result = subprocess.run([psql, "-X", "-A", "-t", "-w", "-d", conninfo,
                                 "-c", "select pg_is_in_recovery()"],
                                capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        print(f"start guard: {peer} did not answer", file=sys.stderr)
        return False
    if result.returncode != 0:
        # Down, a warm standby, or refusing us: a login refused is worth
        # knowing, since it disables the guard.
        print(f"start guard: could not ask {peer}: {result.stderr.strip()}", file=sys.stderr)
        return False
    return result.stdout.strip() == "f"


def write(path, text, owner):
    with open(path, "w") as stream:
        stream.write(text)
    os.chown(path, owner.st_uid, owner.st_gid)
    os.chmod(path, 0o600)


def main(data_dir, psql, passfile, user, *peers):
    if os.path.exists(os.path.join(data_dir, "standby.signal")):
        return 0
    for peer in peers:
        if writable_primary(psql, passfile, user, peer):
            reason = (f"start guard: {peer} is already a writable primary; this former "
                      "primary starts fenced, in recovery (rejoin it with orch.failback)")
            owner = os.stat(data_dir)
            marker = os.path.join(data_dir, "pg_replication.fenced")
            if not os.path.exists(marker):
                fenced_at = datetime.datetime.now(datetime.timezone.utc)
                write(marker, json.dumps({"fenced_at": fenced_at.isoformat(timespec="seconds"),
                                          "reason": reason}) + "\n", owner)
            write(os.path.join(data_dir, "standby.signal"), "", owner)
            print(reason, file=sys.stderr)
            return 0
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))

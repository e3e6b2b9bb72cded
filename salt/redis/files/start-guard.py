#!/usr/bin/python3
"""
Start guard of Redis, run by its systemd unit before every start (managed
by Salt: salt/redis/start_guard.sls).

A node whose role file makes it a master while another Redis node already
is a master is a former master that was failed over while it was down:
starting it as a master would make two. Its role file is rewritten to
follow that master instead (its unreplicated writes were given up by the
forced failover), as redis_replication.replicate_from would.

usage: start-guard.py ROLE_FILE CONFIG_FILE REDIS_CLI HOST:PORT...
"""

import os
import re
import subprocess
import sys


def role_is_master(role_file):
    with open(role_file) as stream:
        return not any(re.match(r"\s*(replicaof|slaveof)\s+(?!no\s+one)", line, re.I)
                       for line in stream)


def password(config_file):
    """The last requirepass of the file, written "double-quoted" as Salt
    writes it, with redis-server's escapes undone."""
    with open(config_file) as stream:
        found = re.findall(r'^requirepass\s+"((?:[^"\\]|\\.)*)"\s*$', stream.read(), re.M)
    if not found:
        return ""
    escapes = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
    return re.sub(r"\\(x[0-9a-fA-F]{2}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3
                  else escapes.get(m.group(1), m.group(1)), found[-1])


def is_master(redis_cli, secret, peer):
    host, _, port = peer.rpartition(":")
    try:
        result = subprocess.run([redis_cli, "--no-auth-warning", "-h", host, "-p", port, "ROLE"],
                                capture_output=True, text=True, timeout=5,
                                env={"REDISCLI_AUTH": secret, "PATH": os.defpath})
    except subprocess.TimeoutExpired:
        print(f"start guard: {peer} did not answer", file=sys.stderr)
        return False
    if result.returncode != 0 or result.stdout.startswith(("NOAUTH", "WRONGPASS", "ERR")):
        print(f"start guard: could not ask {peer}: {(result.stderr or result.stdout).strip()}",
              file=sys.stderr)
        return False
    return result.stdout.split("\n", 1)[0].strip() == "master"


def main(role_file, config_file, redis_cli, *peers):
    if not role_is_master(role_file):
        return 0
    secret = password(config_file)
    for peer in peers:
        if is_master(redis_cli, secret, peer):
            host, _, port = peer.rpartition(":")
            owner = os.stat(role_file)
            temporary = role_file + ".start-guard"
            with open(temporary, "w") as stream:
                stream.write("# This Redis node's replication role. Rewritten by the start guard:\n"
                             f"# {peer} was already the master when this node started.\n"
                             f"replicaof {host} {port}\n")
            os.chown(temporary, owner.st_uid, owner.st_gid)
            os.chmod(temporary, owner.st_mode & 0o777)
            os.replace(temporary, role_file)
            print(f"start guard: {peer} is already the Redis master; this node follows it",
                  file=sys.stderr)
            return 0
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))

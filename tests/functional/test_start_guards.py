"""The start guards (salt/start_guard: its program, and the rules of
ha_core.guard installed beside it) against real servers on loopback: a
PostgreSQL primary and warm standby (pg_cluster.py), a Redis master and
replica (redis_pair.py).

Each guard runs as its systemd unit runs it before every start: as root,
with /usr/bin/python3. A node about to start as a primary (master) while a
peer already is one must come up following it; in every other case the
guard must change nothing."""

import datetime
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.functional.pg_cluster import (  # noqa: F401 (fixtures)
    BIN,
    OS_USER,
    REPLICATION_USER,
    as_postgres,
    free_port,
    pg_nodes,
    pg_pair,
)
from tests.functional.redis_pair import (  # noqa: F401 (fixtures)
    START_TIMEOUT_SECONDS,
    redis_pair,
    redis_servers,
    wait_until,
)


def install_guard(prefix):
    """Lay the guard out under prefix as salt/start_guard does under /usr/local:
    the program in sbin/, the core in lib/airflow-ha/. Returns the program."""
    program = prefix / "sbin" / "airflow-ha-start-guard"
    program.parent.mkdir(parents=True)
    shutil.copy(REPO / "salt" / "start_guard" / "files" / "airflow-ha-start-guard", program)
    shutil.copytree(REPO / "_utils" / "ha_core", prefix / "lib" / "airflow-ha" / "ha_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return program


GUARD = install_guard(Path(tempfile.mkdtemp(prefix="start-guard-")))
REDIS_CLI = "/usr/bin/redis-cli"
FENCE_MARKER = "pg_replication.fenced"


def run_guard(component, *args, program=GUARD):
    """Run a start guard as its systemd unit does; return its result."""
    return subprocess.run(["/usr/bin/python3", str(program), component, *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def guard_passes(component, *args):
    """Run a start guard; it must exit 0."""
    result = run_guard(component, *args)
    assert result.returncode == 0, (
        f"the {component} guard exited {result.returncode}:\n{result.stdout}{result.stderr}")


def guard_postgresql(node, *peers):
    """The PostgreSQL guard of `node`, with the replication user's password file."""
    guard_passes("postgresql", node.data_dir, BIN / "psql", node.passfile, REPLICATION_USER,
                 *peers)


def guard_redis(server, *peers):
    """The Redis guard of `server`; peers are RedisServers or HOST:PORT."""
    guard_passes("redis", server.role_file, server.config_file, REDIS_CLI,
                 *(peer if isinstance(peer, str) else f"127.0.0.1:{peer.port}" for peer in peers))


def snapshot(directory):
    """Every file of a directory (not recursive) with its content, owner,
    mode and modification time."""
    files = {}
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            with open(entry.path, "rb") as stream:
                files[entry.name] = (stream.read(), stat.st_uid, stat.st_gid, stat.st_mode,
                                     stat.st_mtime_ns)
    return files


def closed_address():
    """HOST:PORT of a loopback port nothing listens on."""
    return f"127.0.0.1:{free_port()}"


@contextmanager
def listening_address():
    """HOST:PORT of a loopback socket that never accepts, and a function
    telling whether anything connected to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)

        def contacted():
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                return False
            return True

        yield f"127.0.0.1:{listener.getsockname()[1]}", contacted


def cluster_state(node):
    """pg_controldata's "Database cluster state" of a node."""
    output = as_postgres(BIN / "pg_controldata", node.data_dir).stdout
    [state] = [line.split(":", 1)[1].strip() for line in output.splitlines()
               if line.startswith("Database cluster state:")]
    return state


def start_hot(standby):
    """Restart a warm standby with hot_standby on, so that it answers SQL.
    postgresql.auto.conf is read after postgresql.conf and overrides it; the
    data directory is the test's own (pg_pair makes it afresh)."""
    standby.stop()
    with open(standby.data_dir / "postgresql.auto.conf", "a") as stream:
        stream.write("hot_standby = 'on'\n")
    standby.start()


# --- PostgreSQL --------------------------------------------------------------------


def test_pg_guard_fences_a_former_primary_when_its_peer_was_promoted(pg_pair):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    # Failed over while it was down: pg-a stopped, pg-b promoted.
    old_primary.stop()
    new_primary.pg_ctl("promote", "-w")
    assert new_primary.sql("select pg_is_in_recovery()") == "f"
    assert not (old_primary.data_dir / "standby.signal").exists()

    guard_postgresql(old_primary, new_primary.address)

    postgres = pwd.getpwnam(OS_USER)
    for name in ("standby.signal", FENCE_MARKER):
        stat = (old_primary.data_dir / name).stat()
        assert (stat.st_uid, stat.st_gid, oct(stat.st_mode & 0o777)) == (
            postgres.pw_uid, postgres.pw_gid, "0o600"), name
    marker = json.loads((old_primary.data_dir / FENCE_MARKER).read_text())
    assert sorted(marker) == ["fenced_at", "reason"]
    assert new_primary.address in marker["reason"]
    fenced_at = datetime.datetime.fromisoformat(marker["fenced_at"])
    age = datetime.datetime.now(datetime.timezone.utc) - fenced_at
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=1)

    # Started as the unit would after its guard: in recovery, accepting no
    # writes (and, hot_standby being off, no SQL), fenced as pg_replication
    # (and so orch.failback) sees it.
    old_primary.start()
    assert cluster_state(old_primary) == "in archive recovery"
    refused = old_primary.try_sql("select 1")
    assert refused.returncode != 0 and "Hot standby mode is disabled" in refused.stderr
    state = old_primary.module.status()
    assert (state["role"], state["fenced"], state["fence"]) == ("standby", True, marker)


def test_pg_guard_changes_nothing_when_no_peer_answers(pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    # Both servers down; pg-a is started first, pg-b's port is closed.
    standby.stop()
    primary.stop()
    before = snapshot(primary.data_dir)

    guard_postgresql(primary, standby.address, closed_address())

    assert snapshot(primary.data_dir) == before
    primary.start()
    assert primary.sql("select pg_is_in_recovery()") == "f"


def test_pg_guard_contacts_no_peer_when_the_node_is_already_a_standby(pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    standby.stop()
    before = snapshot(standby.data_dir)
    assert "standby.signal" in before

    with listening_address() as (silent_peer, contacted):
        guard_postgresql(standby, silent_peer, primary.address)
        assert not contacted(), "the guard connected to a peer"

    assert snapshot(standby.data_dir) == before


@pytest.mark.parametrize("hot_standby", [False, True], ids=["warm-standby", "hot-standby"])
def test_pg_guard_changes_nothing_when_the_peer_is_a_standby(pg_pair, hot_standby):
    primary, standby = pg_pair.primary, pg_pair.standby
    if hot_standby:
        start_hot(standby)
        # It answers, as the guard's user does: not writable.
        assert standby.sql("select pg_is_in_recovery()") == "t"
    primary.stop()
    before = snapshot(primary.data_dir)

    guard_postgresql(primary, standby.address)

    assert snapshot(primary.data_dir) == before


# --- Redis -------------------------------------------------------------------------


def test_redis_guard_makes_a_former_master_follow_the_promoted_peer(redis_pair):
    old_master, new_master = redis_pair
    # Failed over while it was down: redis-a stopped, redis-b promoted and written to.
    old_master.stop()
    new_master.client().replicaof("NO", "ONE")
    new_master.client().set("written-after-failover", "yes")
    redis_user = pwd.getpwnam("redis")
    os.chown(old_master.role_file, redis_user.pw_uid, redis_user.pw_gid)
    os.chmod(old_master.role_file, 0o640)  # as salt/redis/config.sls writes it

    guard_redis(old_master, new_master)

    lines = [line for line in old_master.role_file.read_text().splitlines()
             if not line.startswith("#")]
    assert lines == [f"replicaof 127.0.0.1 {new_master.port}"]
    stat = old_master.role_file.stat()
    assert (stat.st_uid, stat.st_gid, oct(stat.st_mode & 0o777)) == (
        redis_user.pw_uid, redis_user.pw_gid, "0o640")
    leftovers = [path.name for path in old_master.directory.iterdir() if path.name[0] == "."]
    assert not leftovers, "a temporary file was left"

    old_master.start()
    wait_until(old_master.link_up, START_TIMEOUT_SECONDS, "the former master's link")
    replication = old_master.replication()
    assert (replication["role"], replication["master_port"]) == ("slave", new_master.port)
    assert old_master.client().get("written-after-failover") == "yes"
    assert new_master.replication()["role"] == "master"


def test_redis_guard_leaves_a_replica_role_file_alone(redis_pair):
    master, replica = redis_pair
    replica.stop()
    before = snapshot(replica.directory)

    guard_redis(replica, master)

    assert snapshot(replica.directory) == before


def test_redis_guard_leaves_a_master_alone_when_no_peer_is_a_master(redis_pair):
    master, replica = redis_pair
    # The master restarts while its replica runs (and answers ROLE as a
    # replica) and another peer is down.
    master.stop()
    before = snapshot(master.directory)

    guard_redis(master, closed_address(), replica)

    assert snapshot(master.directory) == before


# --- Without its rules ---------------------------------------------------------------


def test_a_guard_without_its_core_fails_closed_and_says_how_to_restore_it(pg_pair, tmp_path):
    """systemd starts a unit only when its ExecStartPre exits 0: a guard that
    cannot load its rules must not let a former primary start as it is."""
    primary, standby = pg_pair.primary, pg_pair.standby
    program = install_guard(tmp_path)
    shutil.rmtree(tmp_path / "lib" / "airflow-ha" / "ha_core")
    standby.stop()  # would start as a standby: even that is not let through
    primary.stop()
    before = snapshot(primary.data_dir)

    result = run_guard("postgresql", primary.data_dir, BIN / "psql", primary.passfile,
                       REPLICATION_USER, standby.address, program=program)

    assert result.returncode != 0
    assert "cannot load its rules" in result.stderr and "state.apply" in result.stderr
    assert snapshot(primary.data_dir) == before

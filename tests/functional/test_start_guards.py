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
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.functional.pg_cluster import (  # noqa: F401 (fixtures)
    BIN,
    OS_USER,
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
    """Run the guard program as a systemd unit does; return its result."""
    return subprocess.run(["/usr/bin/python3", str(program), component, *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def guard_passes(component, *args):
    """Run a start guard; it must exit 0."""
    result = run_guard(component, *args)
    assert result.returncode == 0, (
        f"the {component} guard exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


KEY = "test-peer-key"


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "peer.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def write_record(path, primary, generation):
    path.write_text(json.dumps({"primary": primary, "generation": generation}) + "\n")
    return path


@contextmanager
def reporting(*report_args):
    """A node's peer report on a loopback port, served as systemd's
    socket activation does (Accept=yes): the report program per connection,
    with the connection as its standard input and output. Yields the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except (TimeoutError, socket.timeout):
                    continue
                with connection:
                    connection.settimeout(None)
                    subprocess.run(["/usr/bin/python3", str(GUARD), "report", *map(str, report_args)],
                                   stdin=connection.fileno(), stdout=connection.fileno(),
                                   timeout=30)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            thread.join()


def common(node_name, record, key_file):
    return ["--node", node_name, "--record", record, "--key", key_file]


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


def pg_guard(node, tmp_path, key_file, record, port, peer="airflow-server2"):
    """Run the PostgreSQL guard of `node` (named airflow-server1 unless told),
    asking `peer` at 127.0.0.1:port."""
    return guard_passes("postgresql", *common(node.name, record, key_file), "--port", port,
                        "--data-dir", node.data_dir, "--peer", f"{peer}=127.0.0.1")


def pg_reporting(node, record, key_file):
    return reporting(*common(node.name, record, key_file), "--data-dir", node.data_dir)


def test_pg_guard_starts_a_primary_beside_a_warm_standby_that_follows_it(pg_pair, tmp_path,
                                                                         key_file):
    """A rebooted primary comes back as primary without help: its warm
    standby answers no SQL, but reports that it runs in recovery."""
    primary, standby = pg_pair.primary, pg_pair.standby
    primary.stop()
    assert standby.try_sql("select 1").returncode != 0  # warm: no SQL
    before = snapshot(primary.data_dir)
    copy_a = write_record(tmp_path / "a.json", primary.name, 1)
    copy_b = write_record(tmp_path / "b.json", primary.name, 1)

    with pg_reporting(standby, copy_b, key_file) as port:
        pg_guard(primary, tmp_path, key_file, copy_a, port, peer=standby.name)

    assert snapshot(primary.data_dir) == before
    primary.start()
    assert primary.sql("select pg_is_in_recovery()") == "f"


def test_pg_guard_fences_a_former_primary_when_its_peer_was_promoted(pg_pair, tmp_path,
                                                                     key_file):
    old_primary, new_primary = pg_pair.primary, pg_pair.standby
    # Failed over while it was down: pg-a stopped, pg-b promoted, recorded.
    old_primary.stop()
    new_primary.pg_ctl("promote", "-w")
    assert new_primary.sql("select pg_is_in_recovery()") == "f"
    copy_a = write_record(tmp_path / "a.json", old_primary.name, 1)
    copy_b = write_record(tmp_path / "b.json", new_primary.name, 2)

    with pg_reporting(new_primary, copy_b, key_file) as port:
        result = pg_guard(old_primary, tmp_path, key_file, copy_a, port, peer=new_primary.name)

    postgres = pwd.getpwnam(OS_USER)
    for name in ("standby.signal", FENCE_MARKER):
        stat = (old_primary.data_dir / name).stat()
        assert (stat.st_uid, stat.st_gid, oct(stat.st_mode & 0o777)) == (
            postgres.pw_uid, postgres.pw_gid, "0o600"), name
    marker = json.loads((old_primary.data_dir / FENCE_MARKER).read_text())
    assert sorted(marker) == ["fenced_at", "reason"]
    assert f"{new_primary.name} has a newer topology record (generation 2" in marker["reason"]
    assert "salt-run airflow_ha.unfence" in result.stderr
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


def test_pg_guard_fences_a_primary_whose_peer_does_not_report(pg_pair, tmp_path, key_file):
    """Fail closed: a peer that cannot be asked may be the writer."""
    primary, standby = pg_pair.primary, pg_pair.standby
    standby.stop()
    primary.stop()
    copy_a = write_record(tmp_path / "a.json", primary.name, 1)

    result = pg_guard(primary, tmp_path, key_file, copy_a, free_port(), peer=standby.name)

    assert (primary.data_dir / "standby.signal").exists()
    assert f"{standby.name} does not report" in result.stderr
    primary.start()
    assert cluster_state(primary) == "in archive recovery"


def test_pg_guard_fences_beside_a_peer_signed_with_another_key(pg_pair, tmp_path, key_file):
    primary, standby = pg_pair.primary, pg_pair.standby
    primary.stop()
    copy = write_record(tmp_path / "a.json", primary.name, 1)
    other_key = tmp_path / "other.key"
    other_key.write_text("another key\n")

    with pg_reporting(standby, copy, other_key) as port:
        result = pg_guard(primary, tmp_path, key_file, copy, port, peer=standby.name)

    assert "gave no report: it does not take this node's peer key" in result.stderr
    assert (primary.data_dir / FENCE_MARKER).exists()


def test_the_stale_node_first_then_the_newer_one_ends_with_one_primary(pg_pair, tmp_path,
                                                                       key_file):
    """Both down after a forced failover. The stale one boots first: its
    peer is down, so it starts fenced. The newer one boots next: its peer
    reports recovery and an older record, so it starts as the primary."""
    stale, newer = pg_pair.primary, pg_pair.standby
    stale.stop()
    newer.pg_ctl("promote", "-w")
    newer.stop()
    copy_stale = write_record(tmp_path / "stale.json", stale.name, 1)
    copy_newer = write_record(tmp_path / "newer.json", newer.name, 2)

    pg_guard(stale, tmp_path, key_file, copy_stale, free_port(), peer=newer.name)
    stale.start()
    assert cluster_state(stale) == "in archive recovery"
    with pg_reporting(stale, copy_stale, key_file) as port:
        pg_guard(newer, tmp_path, key_file, copy_newer, port, peer=stale.name)
    newer.start()
    assert newer.sql("select pg_is_in_recovery()") == "f"


def test_a_release_lets_a_fenced_node_start_as_primary_once(pg_pair, tmp_path, key_file):
    primary, standby = pg_pair.primary, pg_pair.standby
    standby.stop()
    primary.stop()
    copy = write_record(tmp_path / "a.json", primary.name, 3)
    release = primary.data_dir / "pg_replication.released"
    release.write_text(json.dumps({"generation": 3}))

    pg_guard(primary, tmp_path, key_file, copy, free_port(), peer=standby.name)

    assert not release.exists() and not (primary.data_dir / "standby.signal").exists()
    pg_guard(primary, tmp_path, key_file, copy, free_port(), peer=standby.name)
    assert (primary.data_dir / "standby.signal").exists(), "a release is used once"


def test_pg_guard_contacts_no_peer_when_the_node_is_already_a_standby(pg_pair, tmp_path,
                                                                      key_file):
    primary, standby = pg_pair.primary, pg_pair.standby
    standby.stop()
    before = snapshot(standby.data_dir)
    assert "standby.signal" in before
    copy = write_record(tmp_path / "b.json", primary.name, 1)

    with listening_address() as (silent_peer, contacted):
        port = silent_peer.rpartition(":")[2]
        pg_guard(standby, tmp_path, key_file, copy, port, peer=primary.name)
        assert not contacted(), "the guard connected to a peer"

    assert snapshot(standby.data_dir) == before


# --- Redis -------------------------------------------------------------------------


def redis_guard(server, key_file, record, port, redis_port, peer="redis-b"):
    return guard_passes("redis", *common(server.name, record, key_file), "--port", port,
                        "--role-file", server.role_file, "--redis-port", redis_port,
                        "--peer", f"{peer}=127.0.0.1")


def redis_reporting(server, record, key_file):
    return reporting(*common(server.name, record, key_file), "--role-file", server.role_file)


def test_redis_guard_makes_a_former_master_follow_the_promoted_peer(redis_pair, tmp_path,
                                                                    key_file):
    old_master, new_master = redis_pair
    # Failed over while it was down: redis-a stopped, redis-b promoted and written to.
    old_master.stop()
    new_master.client().replicaof("NO", "ONE")
    new_master.client().set("written-after-failover", "yes")
    new_master.role_file.write_text("")  # as redis_replication.promote saves it
    redis_user = pwd.getpwnam("redis")
    os.chown(old_master.role_file, redis_user.pw_uid, redis_user.pw_gid)
    os.chmod(old_master.role_file, 0o640)  # as salt/redis/config.sls writes it
    copy_a = write_record(tmp_path / "a.json", old_master.name, 1)
    copy_b = write_record(tmp_path / "b.json", new_master.name, 2)

    with redis_reporting(new_master, copy_b, key_file) as port:
        redis_guard(old_master, key_file, copy_a, port, new_master.port, peer=new_master.name)

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


def test_redis_guard_leaves_a_replica_role_file_alone(redis_pair, tmp_path, key_file):
    master, replica = redis_pair
    replica.stop()
    before = snapshot(replica.directory)
    copy = write_record(tmp_path / "b.json", master.name, 1)

    redis_guard(replica, key_file, copy, free_port(), master.port, peer=master.name)

    assert snapshot(replica.directory) == before


def test_redis_guard_leaves_a_master_alone_when_its_replica_reports_following(redis_pair,
                                                                             tmp_path,
                                                                             key_file):
    master, replica = redis_pair
    master.stop()
    before = snapshot(master.directory)
    copy = write_record(tmp_path / "a.json", master.name, 1)

    with redis_reporting(replica, copy, key_file) as port:
        redis_guard(master, key_file, copy, port, replica.port, peer=replica.name)

    assert snapshot(master.directory) == before


def test_redis_guard_starts_a_master_as_a_replica_when_its_peer_does_not_report(redis_pair,
                                                                              tmp_path,
                                                                              key_file):
    """Fail closed: a replica of an unreachable master takes no writes."""
    master, replica = redis_pair
    master.stop()
    copy = write_record(tmp_path / "a.json", master.name, 1)

    redis_guard(master, key_file, copy, free_port(), replica.port, peer=replica.name)

    lines = [line for line in master.role_file.read_text().splitlines()
             if not line.startswith("#")]
    assert lines == [f"replicaof 127.0.0.1 {replica.port}"]


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

    result = run_guard("postgresql", "--node", primary.name, "--record", tmp_path / "none",
                       "--key", tmp_path / "none", "--port", free_port(),
                       "--data-dir", primary.data_dir, "--peer", f"{standby.name}=127.0.0.1",
                       program=program)

    assert result.returncode != 0
    assert "cannot load its rules" in result.stderr and "state.apply" in result.stderr
    assert snapshot(primary.data_dir) == before

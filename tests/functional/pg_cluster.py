"""Real PostgreSQL 15 servers for the functional tests of pg_replication: a
primary and a warm standby (hot_standby off) streaming from it over loopback,
in temporary directories.

Each node is laid out as Debian lays out a cluster: a data directory, and a
configuration directory whose postgresql.conf holds the node's own port and
socket directory, out of reach of pg_rewind and pg_basebackup (they copy the
other node's data directory). Servers run as the OS user postgres (initdb
refuses root); the tests run as root.

Fixtures: `pg_nodes` (module: two node slots, pg-a and pg-b, with their ports,
settings and Salt loaders, and an initdb'd template cluster), `pg_pair`
(function: a fresh primary pg-a and a standby pg-b streaming from it).
"""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
REPLICATION_USER = "replicator"

SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_log_hints": "on",
    "hot_standby": "off",
    "password_encryption": "scram-sha-256",
}

HBA = f"""\
local all all peer
host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256
host postgres {REPLICATION_USER} 127.0.0.1/32 scram-sha-256
"""

# What pg_rewind needs on its source, and pg_monitor for pg_stat_replication.
REPLICATION_ROLE_GRANTS = f"""
GRANT EXECUTE ON function pg_catalog.pg_ls_dir(text, boolean, boolean) TO {REPLICATION_USER};
GRANT EXECUTE ON function pg_catalog.pg_stat_file(text, boolean) TO {REPLICATION_USER};
GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text) TO {REPLICATION_USER};
GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)
    TO {REPLICATION_USER};
GRANT pg_monitor TO {REPLICATION_USER};
"""


def postgres_process(env=None):
    """subprocess keyword arguments that run a command as the OS user postgres."""
    user = pwd.getpwnam(OS_USER)
    return {
        "user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/",
        "env": {"PATH": os.environ["PATH"], "HOME": user.pw_dir, "LC_ALL": "C", **(env or {})},
    }


def as_postgres(*args, input=None, env=None, check=True):
    """Run a command as the OS user postgres; fail with its output if it fails."""
    result = subprocess.run([str(arg) for arg in args], input=input, capture_output=True,
                            text=True, **postgres_process(env))
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def give_to_postgres(path, mode):
    user = pwd.getpwnam(OS_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, mode)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def initdb(data_dir):
    data_dir.mkdir()
    give_to_postgres(data_dir, 0o700)
    as_postgres(BIN / "initdb", "-D", data_dir, "-U", "postgres", "--auth-local=peer",
                "--auth-host=scram-sha-256", "--no-sync")


@dataclass
class Node:
    """One PostgreSQL node: its directories, port and pg_replication settings.
    `node.module` is pg_replication loaded by Salt with those settings."""

    name: str
    root: Path
    port: int
    hba_file: Path
    passfile: Path
    make_loaders: object = field(repr=False)
    _loaders: object = field(default=None, repr=False)

    @property
    def data_dir(self):
        return self.root / "data"

    @property
    def conf_dir(self):
        return self.root / "conf"

    @property
    def socket_dir(self):
        return self.root / "run"

    @property
    def log_file(self):
        return self.root / "data.log"  # where pg_replication's pg_ctl start writes too

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def settings(self):
        return {
            "bin_dir": str(BIN),
            "data_dir": str(self.data_dir),
            "conf_dir": str(self.conf_dir),
            "port": self.port,
            "socket_dir": str(self.socket_dir),
            "passfile": str(self.passfile),
            "node_name": self.name,
        }

    @property
    def module(self):
        if self._loaders is None:
            self._loaders = self.make_loaders(id=self.name, pg_replication=self.settings)
        return self._loaders.modules.pg_replication

    def write_config(self):
        """The node's postgresql.conf and socket directory, outside the data directory."""
        for directory in (self.root, self.conf_dir, self.socket_dir):
            directory.mkdir(exist_ok=True)
            give_to_postgres(directory, 0o700)
        lines = {
            "data_directory": self.data_dir,
            "hba_file": self.hba_file,
            "port": self.port,
            "unix_socket_directories": self.socket_dir,
            "cluster_name": self.name,
            **SERVER_SETTINGS,
        }
        config = self.conf_dir / "postgresql.conf"
        config.write_text("".join(f"{key} = '{value}'\n" for key, value in lines.items()))
        give_to_postgres(config, 0o600)

    def pg_ctl(self, *args, check=True):
        return as_postgres(BIN / "pg_ctl", *args, "-D", self.data_dir, check=check)

    def start(self):
        self.pg_ctl("start", "-w", "-l", self.log_file,
                    "-o", f"-c config_file={self.conf_dir / 'postgresql.conf'}")

    def stop(self, mode="fast"):
        self.pg_ctl("stop", "-w", "-m", mode)

    def is_running(self):
        return self.data_dir.exists() and self.pg_ctl("status", check=False).returncode == 0

    def psql_args(self, query):
        return [str(arg) for arg in (BIN / "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                                     "-h", self.socket_dir, "-p", self.port, "-d", "postgres",
                                     "-c", query)]

    def try_sql(self, query):
        """Run SQL as postgres over the node's socket; return the finished psql."""
        return as_postgres(*self.psql_args(query), check=False)

    def sql_in_background(self, query):
        """Start running SQL; return the running psql (a Popen)."""
        return subprocess.Popen(self.psql_args(query), **postgres_process())

    def sql(self, query):
        """Run SQL that must succeed; return psql's unaligned output."""
        result = self.try_sql(query)
        assert result.returncode == 0, f"{query} on {self.name}: {result.stderr}"
        return result.stdout.strip()

    def kept_dirs(self):
        """What rejoins kept of what they discarded, beside the data directory."""
        return sorted(self.root.glob("data.discarded-*"))

    def wipe(self):
        """Stop the server if it runs and remove its data directory, what
        rejoins kept beside it, and its log."""
        if self.is_running():
            self.stop("immediate")
        for path in (self.data_dir, self.root / "data.pg_replication-old", *self.kept_dirs()):
            shutil.rmtree(path, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)


def wait_for(predicate, timeout, what):
    """Poll until predicate() returns something true; return it and the seconds taken."""
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pg_nodes(make_loaders):
    """Two node slots (pg-a, pg-b) sharing pg_hba.conf and a password file,
    and a stopped template cluster with the replication role in it.

    Not under pytest's tmp_path: that is inside a directory only root may
    enter, which every pytest run (other engineers' too) resets to that."""
    base = Path(tempfile.mkdtemp(prefix="pg_replication-"))
    a, b, template = (Node(name, base / name, free_port(), base / "pg_hba.conf",
                           base / "passfile", make_loaders)
                      for name in ("pg-a", "pg-b", "template"))
    try:
        give_to_postgres(base, 0o700)
        a.hba_file.write_text(HBA)
        give_to_postgres(a.hba_file, 0o600)
        password = secrets.token_urlsafe(24)
        a.passfile.write_text(f"127.0.0.1:*:*:{REPLICATION_USER}:{password}\n")
        give_to_postgres(a.passfile, 0o600)
        for node in (a, b, template):
            node.write_config()
        initdb(template.data_dir)
        template.start()
        # On stdin, so that the password is on no command line.
        as_postgres(BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", template.socket_dir,
                    "-p", template.port, "-d", "postgres", "-f", "-",
                    input=f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN "
                          f"PASSWORD '{password}';\n{REPLICATION_ROLE_GRANTS}")
        template.stop()
        yield SimpleNamespace(a=a, b=b, template=template)
    finally:
        for node in (a, b, template):
            node.wipe()
        shutil.rmtree(base)


def copy_template(pg_nodes, node):
    subprocess.run(["cp", "-a", str(pg_nodes.template.data_dir), str(node.data_dir)], check=True)


def base_backup(source, target, slot):
    """Build target as a standby of source with pg_basebackup -R."""
    as_postgres(BIN / "pg_basebackup", "-D", target.data_dir, "-X", "stream", "-S", slot, "-R",
                "--checkpoint=fast", "-w",
                "-d", f"host=127.0.0.1 port={source.port} user={REPLICATION_USER} "
                      f"application_name={target.name}",
                env={"PGPASSFILE": str(source.passfile)})


def streaming_standbys(primary):
    return primary.sql("select application_name from pg_stat_replication "
                       "where state = 'streaming' order by 1").split()


@pytest.fixture
def pg_pair(pg_nodes):
    """A fresh primary pg-a and a warm standby pg-b streaming from it through
    the slot pg_b. Both servers are stopped afterwards, whatever happened."""
    primary, standby = pg_nodes.a, pg_nodes.b
    for node in (primary, standby):
        node.wipe()
    try:
        copy_template(pg_nodes, primary)
        primary.start()
        primary.sql("select pg_create_physical_replication_slot('pg_b')")
        base_backup(primary, standby, "pg_b")
        standby.start()
        wait_for(lambda: standby.name in streaming_standbys(primary), 30, "pg-b streaming")
        yield SimpleNamespace(primary=primary, standby=standby)
    finally:
        for node in (primary, standby):
            if node.is_running():
                node.stop("immediate")

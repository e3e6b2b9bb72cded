"""Real redis-server processes on 127.0.0.1 for the redis_replication tests:
a master and a replica that follows it, each configured as Salt configures a
node: a redis.conf with every setting (one random password, shared, as
requirepass and masterauth) that includes last a role file holding only the
initial role (`replicaof`, or nothing for the master).

Import both fixtures into a test module:
`from tests.functional.redis_pair import redis_pair, redis_servers`.
"""

import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_SECONDS = 10
STOP_TIMEOUT_SECONDS = 5


def free_port():
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout, what):
    """Poll condition() until true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """One redis-server: its directory (config file, role file, data, log),
    its port, the password, and its process once started."""

    name: str
    directory: Path
    port: int
    password: str
    address: str = "127.0.0.1"
    process: subprocess.Popen = field(default=None, repr=False)
    # redis.conf as written here, which nothing may change afterwards.
    config_written: bytes = field(default=None, repr=False)

    @property
    def config_file(self):
        return self.directory / "redis.conf"

    @property
    def role_file(self):
        return self.directory / "replication.conf"

    def write_config(self, replicaof=None):
        """A fresh directory with only redis.conf and the role file (the
        initial role: a replica of `replicaof`, else a master)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        lines = [
            f"port {self.port}",
            f"bind {self.address}",
            # The address its master knows it by (it connects from 127.0.0.1).
            f"replica-announce-ip {self.address}",
            f'requirepass "{self.password}"',
            f'masterauth "{self.password}"',
            "appendonly yes",
            f'dir "{self.directory}"',
            "daemonize no",
            "replica-read-only yes",
            f'logfile "{self.directory / "redis.log"}"',
            # A full sync starts at once instead of waiting 5 s for more replicas.
            "repl-diskless-sync-delay 0",
            f'include "{self.role_file}"',
        ]
        self.config_file.write_text("\n".join(lines) + "\n")
        self.config_written = self.config_file.read_bytes()
        role = ["# Initial role, as Salt writes it."]
        if replicaof is not None:
            role.append(f"replicaof {replicaof.address} {replicaof.port}")
        self.role_file.write_text("\n".join(role) + "\n")

    def start(self):
        self.process = subprocess.Popen([REDIS_SERVER, str(self.config_file)])
        wait_until(self.answers, START_TIMEOUT_SECONDS, f"{self.name} on port {self.port}")

    def stop(self):
        """Terminate, then kill if it does not stop."""
        if self.process is None or self.process.poll() is not None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            # redis-server ignores SIGTERM while it writes its first AOF
            # (just after a full sync): ask again until it exits.
            self.process.terminate()
            try:
                self.process.wait(timeout=0.2)
                return
            except subprocess.TimeoutExpired:
                pass
        self.process.kill()
        self.process.wait()

    def crash(self):
        """Kill the process outright, as a power loss would stop it."""
        self.process.kill()
        self.process.wait()

    def client(self, **options):
        return redis.Redis(host=self.address, port=self.port, password=self.password,
                           decode_responses=True, **options)

    def answers(self):
        try:
            return self.client(socket_timeout=1).ping()
        except redis.ConnectionError:
            return False

    def replication(self):
        return self.client().info("replication")

    def link_up(self):
        return self.replication().get("master_link_status") == "up"


@pytest.fixture(scope="module")
def redis_servers(tmp_path_factory):
    """(redis-a, redis-b), not started: ports, directories and password are
    fixed for a test module so that minion settings made once per module
    (port, password_file) hold for each of its tests."""
    base = tmp_path_factory.mktemp("redis")
    password = secrets.token_hex(16)
    return tuple(RedisServer(name, base / name, free_port(), password)
                 for name in ("redis-a", "redis-b"))


@pytest.fixture
def redis_pair(redis_servers):
    """(master, replica): redis-a and redis-b started afresh (no data, config
    files as written here), redis-b following redis-a with its link up;
    both stopped after the test."""
    master, replica = redis_servers
    master.write_config()
    replica.write_config(replicaof=master)
    try:
        master.start()
        replica.start()
        wait_until(replica.link_up, START_TIMEOUT_SECONDS, "the replica's link to its master")
        yield master, replica
    finally:
        replica.stop()
        master.stop()

"""What the failover tests hold every run to, on the lab: a client that keeps
writing through it (failover_writer.py on a lab node), a watch that polls
both servers for two writable PostgreSQL primaries or two Redis masters,
and the account of every acknowledged write afterwards. Also the servers'
own probes (psql, redis-cli) and the runbooks as the operator runs them."""

import contextlib
import json
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import yaml

from lab.settings import LAB_SECRETS
from tests.conftest import REPO, bin_lab
from tests.lab.test_airflow_tier import wait_until

SERVER1, SERVER2 = "airflow-server1", "airflow-server2"
WORKER = "airflow-worker1"
SECRETS = yaml.safe_load(LAB_SECRETS.read_text())


def reload_secrets():
    """SECRETS as pillar/lab/secrets.sls says now (a rotation test edits it)."""
    SECRETS.clear()
    SECRETS.update(yaml.safe_load(LAB_SECRETS.read_text()))
WRITER = Path(__file__).with_name("failover_writer.py")
# A crashed or powered-off server's last acknowledged writes may be lost:
# replication is asynchronous, and Redis syncs its append-only file each second.
CRASH_WINDOW_SECONDS = 2.0


def psql(node, sql, check=True):
    return bin_lab("exec", node, "--", "runuser", "-u", "postgres", "--", "psql", "-XAtq",
                   "-d", "airflow", "-c", sql, check=check)


def redis_cli(node, *args):
    return bin_lab("exec", node, "--", "env", f"REDISCLI_AUTH={SECRETS['redis']['password']}",
                   "redis-cli", "--no-auth-warning", *args).stdout


def writable(node):
    """Whether PostgreSQL on node accepts writes now."""
    result = psql(node, "select not pg_is_in_recovery()", check=False)
    return result.returncode == 0 and result.stdout.strip() == "t"


def redis_master(node):
    """Whether Redis on node is a master now (False when it does not answer)."""
    try:
        return redis_cli(node, "ROLE").split("\n", 1)[0].strip() == "master"
    except AssertionError:
        return False


def salt_run(*args):
    """salt-run from the repository root: its exit status, and its output."""
    result = subprocess.run([str(REPO / ".venv/bin/salt-run"), *args], cwd=REPO,
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def salt_run_json(*args):
    """A runner function's result (its JSON is on stdout; warnings go to stderr)."""
    result = subprocess.run([str(REPO / ".venv/bin/salt-run"), *args, "--out=json"], cwd=REPO,
                            capture_output=True, text=True)
    return json.loads(result.stdout)


def orchestrate(say, name, *args, on_line=None, stop_at=None):
    """Run salt-run state.orchestrate from the repository root; return its
    exit status and output. Its progress lines are shown as they come and
    given to on_line, which can break something half-way; with stop_at, the
    run is killed (as a lost master or a Ctrl-C would) at the first line
    that starts with it."""
    started = time.monotonic()
    process = subprocess.Popen([str(REPO / ".venv/bin/salt-run"), "state.orchestrate", name, *args],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if re.fullmatch(r"\S+_master:\n", line):  # the summary of every step follows
            break
        if line.startswith(("==>", "    ")):
            say(line.rstrip("\n"))
            if on_line:
                on_line(line)
        if stop_at and line.startswith(stop_at):
            process.send_signal(signal.SIGKILL)
            say(f"{name}: killed at {line.strip()!r}")
            break
    lines += process.stdout.readlines()
    process.wait()
    say(f"{name} {' '.join(args)}: exit {process.returncode} in "
        f"{time.monotonic() - started:.1f} s")
    return process.returncode, "".join(lines)


def both(probe):
    """Whether probe is true of both servers at one moment. The servers are
    asked one after the other, so the first is asked again after the
    second: a role that moved from one to the other between two questions
    (a Redis FAILOVER takes milliseconds) is not two writers."""
    return probe(SERVER1) and probe(SERVER2) and probe(SERVER1)


class ServersWatch(threading.Thread):
    """Polls both servers until stopped: every moment with two writable
    PostgreSQL primaries or two Redis masters, and when each was first
    seen writable."""

    def __init__(self):
        super().__init__(daemon=True)
        self.two_primaries, self.two_masters, self.first_writable = [], [], {}
        self.polls, self.stopped = 0, False

    def run(self):
        while not self.stopped:
            now = time.time()
            for node in (SERVER1, SERVER2):
                if node not in self.first_writable and writable(node):
                    self.first_writable[node] = now
            if both(writable):
                self.two_primaries.append(now)
            if both(redis_master):
                self.two_masters.append(now)
            self.polls += 1
            time.sleep(0.3)

    def stop(self):
        self.stopped = True
        self.join(timeout=60)

    def assert_never_two_writers(self, say):
        say(f"{self.polls} polls of both servers: {len(self.two_primaries)} with two writable "
            f"PostgreSQL primaries, {len(self.two_masters)} with two Redis masters")
        assert self.polls >= 3  # it ran; each poll asks the servers through bin/lab exec: seconds
        assert self.two_primaries == [] and self.two_masters == []


class Writer:
    """failover_writer.py running on a lab node for the test's duration."""

    def __init__(self, lab, node=WORKER):
        self.node, self.suffix = node, uuid.uuid4().hex[:8]
        self.table, self.list_key = f"failover_probe_{self.suffix}", f"failover_probe_{self.suffix}"
        self.stop_file = f"/tmp/failover-writer-{self.suffix}.stop"
        settings = {"hosts": [lab[SERVER1], lab[SERVER2]],
                    "database_password": SECRETS["postgresql"]["airflow_password"],
                    "redis_password": SECRETS["redis"]["password"], "table": self.table,
                    "list_key": self.list_key, "stop_file": self.stop_file}
        script = WRITER.read_text().replace("SETTINGS = {}", f"SETTINGS = {settings!r}", 1)
        self.process = subprocess.Popen(
            [str(REPO / "bin/lab"), "exec", node, "--", "/opt/airflow/venv/bin/python", "-"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.process.stdin.write(script)
        self.process.stdin.close()

    def wait_flowing(self, primary):
        wait_until(lambda: psql(primary, f"select count(*) from {self.table}",
                                check=False).stdout.strip() not in ("", "0"), 60, "writes flowing")

    def stop(self):
        """Stop it; its acknowledged writes, as {"postgresql": [[n, server,
        time], ...], "redis": [...]}."""
        bin_lab("exec", self.node, "--", "touch", self.stop_file)
        out = self.process.stdout.read()
        assert self.process.wait(timeout=60) == 0, self.process.stderr.read()
        return json.loads(out)

    def abandon(self):
        bin_lab("exec", self.node, "--", "touch", self.stop_file, check=False)
        self.process.kill()


def stored(writer, primary):
    """The numbers of the writer's rows and Redis items on primary."""
    rows = {int(n) for n in psql(primary, f"select n from {writer.table}").stdout.split()}
    items = {int(n) for n in redis_cli(primary, "lrange", writer.list_key, "0", "-1").split()}
    return {"postgresql": rows, "redis": items}


def assert_nothing_lost(writer, acknowledged, primary):
    """Every row and item the writer had acknowledged is on the primary
    (both PostgreSQL and Redis); returns the acknowledged numbers of each."""
    on_primary = stored(writer, primary)
    acked = {}
    for kind, what in (("postgresql", "rows"), ("redis", "items")):
        acked[kind] = {n for n, _, _ in acknowledged[kind]}
        lost = acked[kind] - on_primary[kind]
        assert not lost, f"lost {what}: {sorted(lost)[:20]}"
    return acked["postgresql"], acked["redis"]


def unaccounted_losses(acknowledged, on_primary, consented=None):
    """The acknowledged writes missing on the final primary that no accepted
    loss explains: a write is explained when its server's run of
    acknowledgments ended (the server crashed or was powered off: the
    writer moved on or stopped getting answers) within CRASH_WINDOW_SECONDS
    after it, or when ``consented`` ({kind: (server address, since)})
    names its server and it came after ``since`` (a loss the operator
    accepted: a forced failover's bound, a failback's discard)."""
    unexplained = {}
    for kind, writes in acknowledged.items():
        # Each write's number -> when its server's run of answers ended; the
        # last run ended when the writer stopped, not at a crash: None.
        run_end, end = {}, None
        for index in range(len(writes) - 1, -1, -1):
            number, server, at = writes[index]
            following = writes[index + 1] if index + 1 < len(writes) else None
            if following and (following[1] != server or following[2] - at > 3):
                end = at
            run_end[number] = end
        accepted = (consented or {}).get(kind)
        unexplained[kind] = sorted(
            number for number, server, at in writes
            if number not in on_primary[kind]
            and not (run_end[number] is not None
                     and at >= run_end[number] - CRASH_WINDOW_SECONDS)
            and not (accepted and server == accepted[0] and at >= accepted[1]))
    return unexplained


def assert_loss_accounted(say, writer, acknowledged, primary, consented=None):
    """Every write the writer had acknowledged is on the primary, but those
    an accepted loss explains (unaccounted_losses); says how many of each."""
    on_primary = stored(writer, primary)
    for kind in ("postgresql", "redis"):
        lost = [n for n, _, _ in acknowledged[kind] if n not in on_primary[kind]]
        say(f"{kind}: {len(acknowledged[kind])} writes acknowledged, {len(lost)} lost, "
            "each at a crash or consented")
    unexplained = unaccounted_losses(acknowledged, on_primary, consented)
    assert unexplained == {"postgresql": [], "redis": []}, loss_details(
        acknowledged, unexplained, consented)


def loss_details(acknowledged, unexplained, consented):
    """For a failed account: each unexplained write's [number, server,
    time], the first and last few, and where the writer changed servers."""
    details = {"consented": consented}
    for kind, numbers in unexplained.items():
        if numbers:
            writes = {write[0]: write for write in acknowledged[kind]}
            lost = [writes[number] for number in numbers]
            switches = [later for earlier, later in zip(acknowledged[kind], acknowledged[kind][1:])
                        if earlier[1] != later[1] or later[2] - earlier[2] > 3]
            details[kind] = {"unexplained": len(lost), "first": lost[:5], "last": lost[-5:],
                             "writes": len(writes), "first_write": acknowledged[kind][0],
                             "server_changes_or_gaps": switches[:10]}
    return json.dumps(details)


@contextlib.contextmanager
def watched(lab, say, primary, writer_node=WORKER):
    """A writer and a watch of both servers for the block: yields the
    writer; at the end, never two writers. The test then accounts for the
    writes: assert_nothing_lost or assert_loss_accounted with the
    acknowledgments in writer.acknowledged."""
    writer = Writer(lab, writer_node)
    watch = ServersWatch()
    try:
        writer.wait_flowing(primary)
        watch.start()
        yield writer
    except BaseException:
        watch.stopped = True
        writer.abandon()
        raise
    watch.stop()
    writer.acknowledged = writer.stop()
    watch.assert_never_two_writers(say)

"""The lab's salt-master: this repository's master configuration, bound to
the lab bridge, with the lab's minion keys pre-seeded."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, wait

from lab.progress import LabError, run, say
from lab.settings import (
    GATEWAY,
    LAB_MASTER_CONF,
    MASTER_CONF_DIR,
    REPO,
    RUN_DIR,
    SALT_ROOT,
    VENV_BIN,
)

PIDFILE = RUN_DIR / "salt-master.pid"
STARTED_WITH = RUN_DIR / "salt-master.config-digest"
LOG = SALT_ROOT / "var" / "log" / "salt" / "master"
KEYS_DIR = RUN_DIR / "minion-keys"
HIGHSTATE_TIMEOUT = 1800
MASTER_PKI = SALT_ROOT / "etc" / "salt" / "pki" / "master"

LAB_CONF = f"""\
# Written by bin/lab: this master serves the local lab. Removed by `bin/lab down`.
interface: {GATEWAY}
root_dir: {SALT_ROOT}
airflow_environment: lab
airflow_topology_record: {SALT_ROOT}/var/lib/airflow-ha/topology-lab.json
# The lab's fence agent (pillar/lab/settings.sls: failover:fence).
airflow_lab_cli: {REPO}/bin/lab
"""


def write_config():
    LAB_MASTER_CONF.parent.mkdir(exist_ok=True)
    LAB_MASTER_CONF.write_text(LAB_CONF)


def remove_config():
    LAB_MASTER_CONF.unlink(missing_ok=True)


def minion_key(name):
    """The node's key pair (generated once per lab), accepted on the master."""
    import salt.crypt

    KEYS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = KEYS_DIR / f"{name}.pem", KEYS_DIR / f"{name}.pub"
    if not private.exists():
        private_pem, public_pem = salt.crypt.gen_keys(2048)
        private.write_text(private_pem)
        private.chmod(0o400)
        public.write_text(public_pem)
    accepted = MASTER_PKI / "minions" / name
    accepted.parent.mkdir(parents=True, exist_ok=True)
    accepted.write_text(public.read_text())
    return private.read_text(), public.read_text()


def pid():
    try:
        value = int(PIDFILE.read_text())
        os.kill(value, 0)
    except (OSError, ValueError):
        return None
    return value


def _config_digest():
    files = [MASTER_CONF_DIR / "master", *sorted((MASTER_CONF_DIR / "master.d").glob("*.conf"))]
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def start():
    """Start the master, or restart it if its configuration changed since."""
    digest = _config_digest()
    if pid() and STARTED_WITH.exists() and STARTED_WITH.read_text() == digest:
        say("    salt-master already running with this configuration")
        return
    stop()
    STARTED_WITH.write_text(digest)
    # In the foreground (no -d) so that it keeps the repository as its
    # working directory: file_roots and pillar_roots are relative to it.
    with open(RUN_DIR / "salt-master.out", "ab") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "salt-master"), "-c", str(MASTER_CONF_DIR), "-l", "warning"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PIDFILE.write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"salt-master exited {process.returncode}; see {LOG}")
        try:
            socket.create_connection((GATEWAY, 4506), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise LabError(f"salt-master did not open {GATEWAY}:4506 in 60 s; see {LOG}")


def stop():
    value = pid()
    if value:
        os.killpg(value, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while pid() and time.monotonic() < deadline:
            time.sleep(0.3)
        if pid():
            os.killpg(value, signal.SIGKILL)
    PIDFILE.unlink(missing_ok=True)


def salt(names, *args, timeout=None):
    """Run the salt CLI from the repository root (as an operator does) on the
    listed minions and return its JSON output."""
    target = ",".join(names)
    result = run(
        [str(VENV_BIN / "salt"), "--out=json", "--static", "-L", target, *args],
        check=False, cwd=REPO, timeout=timeout,
    )
    try:
        return json.loads(result.stdout or "{}")
    except ValueError:
        raise LabError(f"salt -L {target} {' '.join(args)}: {result.stdout}{result.stderr}")


def answering(names, timeout=3):
    """The subset of names whose minions answer test.ping within timeout
    (through the client API: the salt CLI cannot shorten gather_job_timeout)."""
    import salt.client

    with salt.client.LocalClient(c_path=str(MASTER_CONF_DIR / "master")) as client:
        replies = client.cmd(names, "test.ping", tgt_type="list", timeout=timeout,
                             gather_job_timeout=timeout)
    return {name for name in names if replies.get(name) is True}


def wait_for_minions(names, timeout=120):
    deadline = time.monotonic() + timeout
    waiting = set(names)
    while waiting:
        waiting -= answering(sorted(waiting))
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise LabError(f"minions not answering after {timeout} s: {', '.join(sorted(waiting))}")
        say(f"    waiting for {', '.join(sorted(waiting))}")
        time.sleep(2)


def sync_all(names):
    replies = salt(names, "saltutil.sync_all")
    missing = set(names) - set(replies)
    if missing:
        raise LabError(f"saltutil.sync_all did not return from {', '.join(sorted(missing))}")


def highstate(names, heartbeat=30):
    """Apply the highstate on every node at once, printing each node's result
    as it returns; return {name: summary}."""
    summaries = {}
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {pool.submit(_apply, name): name for name in names}
        started = time.monotonic()
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=heartbeat)
            for future in done:
                name = futures[future]
                summaries[name] = summary = future.result()
                say(f"    {name}: {summary['line']}")
            if pending:
                say(f"    {time.monotonic() - started:.0f} s, still applying on "
                    + ", ".join(sorted(futures[f] for f in pending)))
    return summaries


def _apply(name):
    started = time.monotonic()
    # A first highstate installs packages for minutes: wait for the return
    # itself rather than for the minion to answer job queries meanwhile.
    reply = salt([name], "state.apply", f"--timeout={HIGHSTATE_TIMEOUT}").get(name)
    elapsed = time.monotonic() - started
    return summarise(reply, elapsed)


def summarise(reply, elapsed=0.0):
    """Count a node's state results: states, changed, failed (with the
    failures' comments)."""
    if not isinstance(reply, dict):
        errors = reply if isinstance(reply, list) else [str(reply)]
        return {"states": 0, "changed": 0, "failed": ["render: " + e for e in errors],
                "line": "FAILED to render: " + "; ".join(errors)}
    changed = [key for key, r in reply.items() if r.get("changes")]
    failed = [f"{r.get('__id__', key)}: {r.get('comment')}" for key, r in reply.items()
              if r.get("result") is False]
    line = f"{len(reply)} states, {len(changed)} changed, {len(failed)} failed ({elapsed:.0f} s)"
    return {"states": len(reply), "changed": len(changed), "failed": failed, "line": line}


def cluster_status():
    """salt-run airflow_ha.status's data, or None while it cannot answer."""
    result = run([str(VENV_BIN / "salt-run"), "airflow_ha.status", "--out=json"], check=False,
                 cwd=REPO, timeout=120)
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def unhealthy(status):
    """Why the platform is not healthy yet, from airflow_ha.status's data
    (empty: healthy): its problems, and Airflow's through the load balancer."""
    if status is None:
        return ["salt-run airflow_ha.status does not answer"]
    return [*status["problems"],
            *(f"Airflow through the load balancer: {problem}"
              for problem in status["airflow_problems"])]


def wait_until_healthy(timeout, heartbeat=30):
    """Poll airflow_ha.status until nothing is unhealthy; return what still
    was at the timeout (empty: healthy)."""
    started = time.monotonic()
    said = started
    while True:
        reasons = unhealthy(cluster_status())
        now = time.monotonic()
        if not reasons or now - started > timeout:
            return reasons
        if now - said >= heartbeat:
            say(f"    {now - started:.0f} s, not yet: {'; '.join(reasons)}")
            said = now
        time.sleep(3)


def status_text():
    """salt-run airflow_ha.status, as an operator reads it."""
    result = run([str(VENV_BIN / "salt-run"), "airflow_ha.status"], check=False, cwd=REPO,
                 timeout=120)
    return result.stdout.strip()

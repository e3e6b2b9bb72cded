"""bin/lab: bring the local lab up, inspect it, break it, and take it down.

  bin/lab up                   build or reuse the image, boot every node of
                               pillar/lab, start the salt-master, apply the
                               highstate and print a summary
  bin/lab status               each node: up or down, minion answering or not,
                               and whom it is isolated from
  bin/lab exec NODE -- CMD...  run a command on a node; exit with its status
  bin/lab crash NODE           power a node off hard
  bin/lab fence NODE [ADDRESS] the lab's fence agent (pillar failover:fence):
                               power NODE off hard, if it runs; refused when
                               ADDRESS is not NODE's
  bin/lab start NODE           boot a node again and wait for its minion
  bin/lab isolate NODE [--from PEER...]
                               cut a running node off from every other node and
                               the master (PEER: a node, or master), both ways,
                               established connections too; adds to an earlier cut
  bin/lab heal NODE            undo every cut of a node (a restart undoes them too)
  bin/lab down                 stop everything, leave the host as it was
  bin/lab credentials [--json] the lab's logins (Airflow admin, Flower, HAProxy stats)
"""

import argparse
import json
import os
import shutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from lab import image, master, network, partition
from lab.nodes import Node, known_nodes
from lab.progress import LabError, Timings, fail, run, say
from lab.settings import (
    CACHE_DIR,
    LAB_SECRETS,
    REPO,
    RUN_DIR,
    STATE_FILE,
    lab_balancer_address,
    lab_nodes,
)


def nodes():
    return [Node(name, address) for name, address in lab_nodes().items()]


def node_named(name):
    for node in nodes():
        if node.name == name:
            return node
    raise LabError(f"no node {name!r} in pillar/lab/cluster.sls; nodes: {', '.join(lab_nodes())}")


# -- up ---------------------------------------------------------------------

# How long up waits, after the highstate, for the platform to be healthy:
# the data tier without problems, and Airflow healthy through the load balancer.
HEALTHY_TIMEOUT = 300

def up(args):
    timings = Timings()
    _take_over_from_other_checkout()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps({"repo": str(REPO)}))
    lab = nodes()
    with timings.step("wheelhouse (salt-minion and Airflow wheels)"):
        image.ensure_wheelhouse()
    with timings.step("Debian 12 image"):
        base = image.ensure_image(in_use={node.image() for node in known_nodes()})
    with timings.step("network: bridge and NAT"):
        network.up()
    with timings.step("salt-master on the lab bridge"):
        master.write_config()
        master.start()
    with timings.step(f"boot {len(lab)} nodes"):
        for node in lab:
            if node.is_running() and node.image() == base:
                say(f"    {node.name}: already running")
                continue
            node.poweroff()
            node.create(base)
            node.install_minion_key(*master.minion_key(node.name))
            # One at a time: machines booting at the same moment race for
            # their cgroups, and an early unit now and then fails on it.
            say(f"    {node.name}: {node.boot_and_wait()}")
    names = [node.name for node in lab]
    with timings.step("minions answering"):
        master.wait_for_minions(names)
    with timings.step("sync modules"):
        master.sync_all(names)
    with timings.step("highstate on every node"):
        summaries = master.highstate(names)
    failed = {name: s["failed"] for name, s in summaries.items() if s["failed"]}
    unhealthy = []
    if not failed:
        with timings.step("healthy: the data tier, and Airflow through the load balancer"):
            unhealthy = master.wait_until_healthy(HEALTHY_TIMEOUT)
    _print_summary(lab)
    timings.report()
    for name, failures in failed.items():
        for failure in failures:
            say(f"FAILED {name}: {failure}")
    for reason in unhealthy:
        say(f"NOT HEALTHY after {HEALTHY_TIMEOUT} s: {reason}")
    return 1 if failed or unhealthy else 0


def _take_over_from_other_checkout():
    """One lab per host: a lab left by another checkout (or a crashed session
    of it) is taken down first, since its master serves other files."""
    try:
        owner = json.loads(STATE_FILE.read_text())["repo"]
    except (OSError, ValueError, KeyError):
        owner = None
    if owner and owner != str(REPO):
        say(f"==> a lab of {owner} is here; taking it down first")
        down(None)


def _print_summary(lab):
    say("")
    say("nodes:")
    answering = master.answering([node.name for node in lab])
    for node in lab:
        minion = "minion answering" if node.name in answering else "minion NOT answering"
        say(f"    {node.name:18} {node.address:13} {node.system_state():10} {minion}")
    say("")
    balancer = lab_balancer_address()
    if balancer:
        say("through the load balancer:")
        say(f"    Airflow UI   https://{balancer}/   (the lab's self-signed certificate:")
        say("                 haproxy:tls:certificate in pillar/lab/secrets.sls)")
        say(f"    REST API     https://{balancer}/api/v2/   (a token from POST /auth/token;")
        say(f"                 on Airflow 2: https://{balancer}/api/v1/ with basic auth)")
        say(f"    Flower       http://{balancer}:5555/")
        say(f"    HAProxy      http://{balancer}:8404/stats")
        say("credentials: bin/lab credentials (from pillar/lab/secrets.sls)")
    say("the checklist (salt-run airflow_ha.status):")
    say("\n".join(f"    {line}" for line in master.status_text().splitlines()))
    say(f"salt: cd {REPO} && .venv/bin/salt '*' test.ping")
    say("replication: .venv/bin/salt 'airflow-server*' pg_replication.status (or redis_replication.status)")
    say("shell on a node: bin/lab exec NODE -- bash")
    say("")


# -- status, exec, crash, start, isolate, heal ----------------------------------

def status(args):
    lab = nodes()
    running = [node for node in lab if node.is_running()]
    answering = master.answering([n.name for n in running]) if running and master.pid() else set()
    say(f"salt-master: {'running' if master.pid() else 'down'}")
    for node in lab:
        minion = "minion answering" if node.name in answering else "minion not answering"
        cut = _isolation(node) if node in running else ""
        say(f"{node.name:18} {node.address:13} {node.system_state():10} {minion}{cut}")
    return 0


def _isolation(node):
    # Without iptables on the host, bin/lab isolate cannot have cut anything.
    if not partition.iptables_installed():
        return ""
    cut = partition.cut_addresses_of(partition.node_iptables(node))
    return f"  isolated from {', '.join(partition.names_of(cut, lab_nodes()))}" if cut else ""


def exec_(args):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return fail("usage: bin/lab exec NODE -- COMMAND [ARGS...]")
    return node_named(args.node).exec(command, capture=False).returncode


def crash(args):
    node = node_named(args.node)
    if not node.is_running():
        return fail(f"{node.name} is not running")
    node.crash()
    say(f"{node.name}: powered off hard")
    return 0


def fence(args):
    """A fence agent as Pacemaker's are: it succeeds once the node is off."""
    node = node_named(args.node)
    if args.address and args.address != node.address:
        return fail(f"{node.name} is at {node.address}, not {args.address}: not fencing it")
    if node.is_running():
        node.crash()
    say(f"{node.name}: fenced (powered off)")
    return 0


def start(args):
    node = node_named(args.node)
    timings = Timings()
    if node.is_running():
        say(f"{node.name}: already running")
        return 0
    base = node.image()
    if base is None:
        return fail(f"{node.name} has no disk; run bin/lab up")
    with timings.step(f"boot {node.name}"):
        node.create(base)
        say(f"    {node.name}: {node.boot_and_wait()}")
    with timings.step("minion answering"):
        master.wait_for_minions([node.name])
    timings.report()
    return 0


def isolate(args):
    partition.require_iptables()
    node = node_named(args.node)
    peers = partition.peers_to_cut(node.name, args.peers, lab_nodes())
    iptables = partition.node_iptables(node)
    partition.isolate(iptables, peers.values())
    cut = partition.names_of(partition.cut_addresses_of(iptables), lab_nodes())
    say(f"{node.name}: isolated from {', '.join(cut)}")
    return 0


def heal(args):
    partition.require_iptables()
    node = node_named(args.node)
    was_cut = partition.heal(partition.node_iptables(node))
    if was_cut:
        say(f"{node.name}: healed (was isolated from "
            f"{', '.join(partition.names_of(was_cut, lab_nodes()))})")
    else:
        say(f"{node.name}: not isolated; nothing to heal")
    return 0


def credentials(args):
    """The lab's logins, from its pillar (pillar/lab/secrets.sls)."""
    secrets = yaml.safe_load(LAB_SECRETS.read_text())
    airflow = secrets["airflow"]
    logins = {
        "admin": {"username": airflow["admin"].get("username", "admin"),
                  "password": airflow["admin"]["password"]},
        "flower": {"username": airflow["flower"].get("username", "flower"),
                   "password": airflow["flower"]["password"]},
        "stats": {"username": secrets["haproxy"].get("stats_user", "admin"),
                  "password": secrets["haproxy"]["stats_password"]},
    }
    if args.json:
        print(json.dumps(logins))
    else:
        for name, login in logins.items():
            say(f"{name:8} {login['username']} / {login['password']}")
    return 0


# -- down -------------------------------------------------------------------

def down(args):
    timings = Timings()
    with timings.step("stop nodes"):
        stale = known_nodes()
        with ThreadPoolExecutor(max_workers=max(len(stale), 1)) as pool:
            list(pool.map(Node.poweroff, stale))
        for node in stale:
            node.unmount()
    with timings.step("stop salt-master"):
        master.stop()
        master.remove_config()
    with timings.step("stale processes and mounts"):
        _kill_leftovers()
    with timings.step("network"):
        network.down()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    timings.report()
    return 0


def _kill_leftovers():
    """Processes and mounts of ours that lost their pid files (an interrupted
    run): anything whose command line or mount point is under RUN_DIR."""
    marker = str(RUN_DIR).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass
    with open("/proc/self/mounts") as mounts:
        ours = [line.split()[1] for line in mounts if line.split()[1].startswith(str(RUN_DIR))]
    for mountpoint in sorted(ours, reverse=True):
        run(["umount", "--lazy", mountpoint])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bin/lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("up").set_defaults(func=up)
    commands.add_parser("status").set_defaults(func=status)
    commands.add_parser("down").set_defaults(func=down)
    show = commands.add_parser("credentials")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=credentials)
    run_on = commands.add_parser("exec")
    run_on.add_argument("node")
    run_on.add_argument("command", nargs=argparse.REMAINDER)
    run_on.set_defaults(func=exec_)
    for name, func in (("crash", crash), ("start", start), ("heal", heal)):
        sub = commands.add_parser(name)
        sub.add_argument("node")
        sub.set_defaults(func=func)
    fence_node = commands.add_parser("fence")
    fence_node.add_argument("node")
    fence_node.add_argument("address", nargs="?")
    fence_node.set_defaults(func=fence)
    cut = commands.add_parser("isolate")
    cut.add_argument("node")
    cut.add_argument("--from", dest="peers", nargs="+", action="extend", default=[],
                     metavar="PEER", help="a node, or master (the host's salt-master); "
                                          "without it: every other node and the master")
    cut.set_defaults(func=isolate)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        return fail("the lab needs root (it mounts, boots machines and sets up NAT)")
    try:
        return args.func(args)
    except LabError as error:
        return fail(str(error))

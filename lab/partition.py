"""Network partitions: cut a running node off from other nodes and from the
master, and heal it.

The cut is packet filtering inside the node's own network namespace, done
from the host with the host's iptables (nodes have none): every rule is in
the chain CHAIN, hooked first into INPUT and OUTPUT, so heal finds and
removes exactly ours. The rules match every packet, not only new
connections: an established connection (a minion's to its master) stops too.
The namespace lives as long as the node: a crashed or restarted node comes
back uncut.

The argument lists are built from a namespace's `iptables -S` listing by the
plain functions below; isolate, heal and cut_addresses_of run them.
"""

import shutil

from lab.progress import LabError, run
from lab.settings import GATEWAY

CHAIN = "AIRFLOW-LAB-ISOLATE"
HOOKS = ("INPUT", "OUTPUT")
# The name --from takes for the host, whose salt-master listens on GATEWAY.
MASTER = "master"


def peers_of(lab_nodes):
    """{name: address} of everyone a node can be cut off from: the lab's nodes
    (lab.settings.lab_nodes()) and the master."""
    return {**lab_nodes, MASTER: GATEWAY}


def peers_to_cut(node, requested, lab_nodes):
    """{name: address} to cut `node` off from: the `requested` names, or when
    none, every other node and the master."""
    others = {name: address for name, address in peers_of(lab_nodes).items() if name != node}
    if not requested:
        return others
    if node in requested:
        raise LabError(f"{node} cannot be cut off from itself")
    unknown = [name for name in requested if name not in others]
    if unknown:
        raise LabError(f"no node {', '.join(unknown)} to cut {node} off from; "
                       f"choose from {', '.join(others)}")
    return {name: others[name] for name in requested}


def _drop_rules(address):
    # Both directions; as iptables -S lists them, to find them in a listing.
    return [["-A", CHAIN, direction, f"{address}/32", "-j", "DROP"] for direction in ("-s", "-d")]


def _hook_rule(builtin):
    return ["-A", builtin, "-j", CHAIN]


def isolation_commands(listing, addresses):
    """iptables argument lists that cut a namespace, whose `iptables -S` is
    `listing`, off from `addresses`, adding only what is missing: the same
    cut twice leaves one rule set."""
    present = set(listing.splitlines())
    commands = [] if f"-N {CHAIN}" in present else [["-N", CHAIN]]
    for address in addresses:
        commands += [rule for rule in _drop_rules(address) if " ".join(rule) not in present]
    for builtin in HOOKS:
        if " ".join(_hook_rule(builtin)) not in present:
            # First in line, so that no earlier rule accepts a packet of the cut.
            commands.append(["-I", builtin, "1", "-j", CHAIN])
    return commands


def healing_commands(listing):
    """iptables argument lists that remove every rule of the cut from a
    namespace whose `iptables -S` is `listing`; none when it is not cut."""
    lines = listing.splitlines()
    if f"-N {CHAIN}" not in lines:
        return []
    hooks = {" ".join(_hook_rule(builtin)) for builtin in HOOKS}
    # Every listed hook, a doubled one too: -X refuses a chain still in use.
    unhook = [["-D", *line.split()[1:]] for line in lines if line in hooks]
    return unhook + [["-F", CHAIN], ["-X", CHAIN]]


def cut_addresses(listing):
    """The addresses a namespace whose `iptables -S` is `listing` is cut off
    from, in the order they were cut."""
    prefix = f"-A {CHAIN} -s "
    return [line[len(prefix):].split()[0].removesuffix("/32")
            for line in listing.splitlines() if line.startswith(prefix)]


def names_of(addresses, lab_nodes):
    """The peer names of cut addresses (an address no peer has stays as is)."""
    by_address = {address: name for name, address in peers_of(lab_nodes).items()}
    return [by_address.get(address, address) for address in addresses]


# -- running iptables ----------------------------------------------------------

def iptables_installed():
    return shutil.which("iptables") is not None


def require_iptables():
    if not iptables_installed():
        raise LabError("iptables is not installed on the host; run bin/install-host-packages "
                       "(it installs the Debian package iptables)")


def node_iptables(node):
    """The command prefix running the host's iptables in `node`'s network
    namespace: nsenter -n enters no other namespace, so the binary is the
    host's. -w waits for the xtables lock, which is the host's too."""
    leader = node.leader_pid()
    if leader is None:
        raise LabError(f"{node.name} is not running")
    return ["nsenter", "-t", str(leader), "-n", "iptables", "-w"]


def _listing(iptables):
    return run([*iptables, "-S"]).stdout


def isolate(iptables, addresses):
    """Cut the namespace `iptables` acts in off from `addresses`, adding to any cut."""
    for command in isolation_commands(_listing(iptables), addresses):
        run([*iptables, *command])


def heal(iptables):
    """Remove every rule of the cut; return the addresses it was cut off from."""
    listing = _listing(iptables)
    for command in healing_commands(listing):
        run([*iptables, *command])
    return cut_addresses(listing)


def cut_addresses_of(iptables):
    return cut_addresses(_listing(iptables))

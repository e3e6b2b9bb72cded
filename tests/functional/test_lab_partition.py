"""bin/lab isolate and heal (lab/partition.py) for real, without the lab: a
throwaway pair of network namespaces joined by a veth pair in 192.0.2.0/24
(TEST-NET-1, never the lab's network) stands in for a node and its peer, and
the host's iptables cuts the node's namespace as it cuts a lab node's.

Reachability is a TCP connection attempt to a port nobody listens on: a
refusal is an answer, so the packets went both ways; silence is the cut."""

import os
import shutil
import subprocess
import sys

import pytest

from lab import cli, master, partition
from lab.nodes import Node

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "iptables", "nsenter")),
    reason="needs root, ip, iptables and nsenter (network namespaces)",
)

NODE_ADDRESS = "192.0.2.2"
PEER_ADDRESS = "192.0.2.1"
# An address no namespace has: cutting the node off from it cuts nothing real.
ELSEWHERE = "192.0.2.3"
CLOSED_PORT = 9
ECHO_PORT = 7007

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except ConnectionRefusedError:
    pass
except OSError:
    sys.exit(1)
"""

ECHO_SERVER = f"""
import socket
server = socket.create_server(("{PEER_ADDRESS}", {ECHO_PORT}))
print("listening", flush=True)
connection, _ = server.accept()
while data := connection.recv(100):
    connection.sendall(data)
"""

# One connection held open: each line on stdin, "TOKEN TIMEOUT", is sent, and
# "echo" or "silent" printed as its echo comes back within TIMEOUT or not.
CONNECTION_HOLDER = f"""
import socket, sys
connection = socket.create_connection(("{PEER_ADDRESS}", {ECHO_PORT}), timeout=1)
print("connected", flush=True)
received = b""
for line in sys.stdin:
    token, timeout = line.split()
    connection.settimeout(float(timeout))
    connection.sendall(token.encode())
    try:
        while token.encode() not in received:
            received += connection.recv(100)
        print("echo", flush=True)
    except TimeoutError:
        print("silent", flush=True)
"""


def in_namespace(namespace, *argv):
    # --net only: the host's mount namespace, so the host's binaries.
    return ["nsenter", f"--net=/run/netns/{namespace}", *argv]


def answers(namespace, address):
    """Whether a TCP connection from `namespace` to `address` gets any answer within 1 s."""
    probe = in_namespace(namespace, sys.executable, "-c", PROBE, address, str(CLOSED_PORT))
    return subprocess.run(probe, check=False).returncode == 0


@pytest.fixture
def namespaces():
    """(node, peer): two fresh network namespaces on a veth pair; removed
    afterwards with every process left in them."""
    node, peer = f"lp{os.getpid()}n", f"lp{os.getpid()}p"
    processes = []
    try:
        for namespace in (node, peer):
            subprocess.run(["ip", "netns", "add", namespace], check=True)
            subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        # Each end of the veth pair is named after its namespace.
        subprocess.run(["ip", "link", "add", node, "netns", node,
                        "type", "veth", "peer", "name", peer, "netns", peer], check=True)
        for namespace, address in ((node, NODE_ADDRESS), (peer, PEER_ADDRESS)):
            subprocess.run(["ip", "-n", namespace, "addr", "add", f"{address}/24",
                            "dev", namespace], check=True)
            subprocess.run(["ip", "-n", namespace, "link", "set", namespace, "up"], check=True)
        yield node, peer, processes
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for namespace in (node, peer):
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


def start(processes, argv, first_line):
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    processes.append(process)
    assert process.stdout.readline().strip() == first_line
    return process


# A firewall of the node's own that lets established connections through, in
# place before the connection: the cut must come before it and match them too.
OWN_FIREWALL = [["-A", chain, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]
                for chain in ("INPUT", "OUTPUT")]


def listing(iptables):
    return subprocess.run([*iptables, "-S"], capture_output=True, text=True, check=True).stdout


def test_a_cut_node_is_silent_both_ways_even_on_an_established_connection_until_healed(namespaces):
    node, peer, processes = namespaces
    iptables = in_namespace(node, "iptables", "-w")
    for rule in OWN_FIREWALL:
        subprocess.run([*iptables, *rule], check=True)
    own_firewall = listing(iptables)
    start(processes, in_namespace(peer, sys.executable, "-c", ECHO_SERVER), "listening")
    holder = start(processes, in_namespace(node, sys.executable, "-c", CONNECTION_HOLDER),
                   "connected")

    def established_echoes(token, timeout):
        holder.stdin.write(f"{token} {timeout}\n")
        holder.stdin.flush()
        return holder.stdout.readline().strip() == "echo"

    assert answers(node, PEER_ADDRESS) and answers(peer, NODE_ADDRESS)
    assert established_echoes("before", 1)

    partition.isolate(iptables, [PEER_ADDRESS])
    partition.isolate(iptables, [PEER_ADDRESS])
    rules = listing(iptables)
    assert rules.count("-j DROP") == 2 and rules.count(f"-j {partition.CHAIN}") == 2
    assert partition.cut_addresses_of(iptables) == [PEER_ADDRESS]
    assert not answers(node, PEER_ADDRESS)
    assert not answers(peer, NODE_ADDRESS)
    assert not established_echoes("cut", 1)
    assert answers(node, "127.0.0.1") and answers(node, NODE_ADDRESS)

    assert partition.heal(iptables) == [PEER_ADDRESS]
    assert partition.heal(iptables) == []
    assert listing(iptables) == own_firewall
    assert answers(node, PEER_ADDRESS) and answers(peer, NODE_ADDRESS)
    # TCP retransmits what the cut held back: the connection carries on.
    assert established_echoes("healed", 5)


@pytest.fixture
def fake_lab(namespaces, monkeypatch):
    """The CLI's view of a lab of two nodes, fake-node (the node namespace,
    led by a sleeping process) and fake-other (not running, at an address
    nobody has), whose master is the peer namespace."""
    node, peer, processes = namespaces
    leader = subprocess.Popen(in_namespace(node, "sleep", "60"))
    processes.append(leader)
    monkeypatch.setattr(cli, "lab_nodes",
                        lambda: {"fake-node": NODE_ADDRESS, "fake-other": ELSEWHERE})
    monkeypatch.setattr(partition, "GATEWAY", PEER_ADDRESS)
    monkeypatch.setattr(Node, "leader_pid",
                        lambda self: leader.pid if self.name == "fake-node" else None)
    monkeypatch.setattr(Node, "system_state",
                        lambda self: "running" if self.is_running() else "down")
    monkeypatch.setattr(master, "pid", lambda: None)
    return node, peer


def test_bin_lab_isolates_from_the_named_peers_shows_it_in_status_and_heals(fake_lab, capsys):
    node, peer = fake_lab

    assert cli.main(["isolate", "fake-node", "--from", "fake-other"]) == 0
    assert capsys.readouterr().out == "fake-node: isolated from fake-other\n"
    assert answers(node, PEER_ADDRESS)

    assert cli.main(["isolate", "fake-node", "--from", "master"]) == 0
    assert cli.main(["isolate", "fake-node"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "fake-node: isolated from fake-other, master"
    assert not answers(peer, NODE_ADDRESS)

    assert cli.main(["status"]) == 0
    shown = capsys.readouterr().out
    assert "minion not answering  isolated from fake-other, master\n" in shown
    assert "fake-other         192.0.2.3     down       minion not answering\n" in shown

    assert cli.main(["heal", "fake-node"]) == 0
    assert cli.main(["heal", "fake-node"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "fake-node: healed (was isolated from fake-other, master)",
        "fake-node: not isolated; nothing to heal",
    ]
    assert answers(peer, NODE_ADDRESS)

"""The lab's decisions that need no machine: reading the lab pillar,
summarising a highstate, and the iptables rules of a network partition."""

import pytest

from lab import master, partition, settings
from lab.nodes import Node
from lab.progress import LabError


def test_lab_nodes_come_from_the_lab_pillar_in_order():
    assert settings.lab_nodes() == {
        "airflow-lb1": "10.11.12.5",
        "airflow-server1": "10.11.12.10",
        "airflow-server2": "10.11.12.20",
        "airflow-worker1": "10.11.12.30",
    }


@pytest.mark.parametrize("address", ["10.99.0.7", "10.11.12.1"])
def test_a_node_address_outside_the_lab_network_is_refused(tmp_path, monkeypatch, address):
    pillar = tmp_path / "cluster.sls"
    pillar.write_text(f"cluster:\n  nodes:\n    odd:\n      address: {address}\n      roles: []\n")
    monkeypatch.setattr(settings, "LAB_PILLAR", pillar)
    with pytest.raises(SystemExit, match=r"cluster:nodes:odd:address .* must be in 10.11.12.0/24"):
        settings.lab_nodes()


def test_summary_counts_changed_and_failed_states():
    reply = {
        "a": {"__id__": "hosts", "result": True, "changes": {"added": "x"}, "comment": ""},
        "b": {"__id__": "pkgs", "result": False, "changes": {}, "comment": "no such package"},
        "c": {"__id__": "user", "result": True, "changes": {}, "comment": ""},
    }
    summary = master.summarise(reply, elapsed=3.2)
    assert (summary["states"], summary["changed"]) == (3, 1)
    assert summary["failed"] == ["pkgs: no such package"]
    assert summary["line"] == "3 states, 1 changed, 1 failed (3 s)"


def test_summary_of_a_render_failure_is_a_failure():
    summary = master.summarise(["Rendering SLS 'base:common' failed: bad"])
    assert summary["failed"] == ["render: Rendering SLS 'base:common' failed: bad"]


# -- partitions (lab/partition.py) ------------------------------------------

LAB = {
    "airflow-lb1": "10.11.12.5",
    "airflow-server1": "10.11.12.10",
    "airflow-server2": "10.11.12.20",
}
CHAIN = partition.CHAIN
# `iptables -S` in a node's namespace, as iptables 1.8 lists it.
UNCUT = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
CUT_FROM_SERVER2 = UNCUT + (
    f"-N {CHAIN}\n"
    f"-A INPUT -j {CHAIN}\n"
    f"-A OUTPUT -j {CHAIN}\n"
    f"-A {CHAIN} -s 10.11.12.20/32 -j DROP\n"
    f"-A {CHAIN} -d 10.11.12.20/32 -j DROP\n"
)


def test_without_from_a_node_is_cut_off_from_every_other_node_and_the_master():
    assert partition.peers_to_cut("airflow-server1", [], LAB) == {
        "airflow-lb1": "10.11.12.5",
        "airflow-server2": "10.11.12.20",
        "master": "10.11.12.1",
    }


def test_from_names_only_those_peers_and_master_is_the_host():
    assert partition.peers_to_cut("airflow-server1", ["master", "airflow-server2", "master"], LAB) \
        == {"master": "10.11.12.1", "airflow-server2": "10.11.12.20"}


def test_a_node_cannot_be_cut_off_from_itself():
    with pytest.raises(LabError, match="airflow-server1 cannot be cut off from itself"):
        partition.peers_to_cut("airflow-server1", ["airflow-server1"], LAB)


def test_an_unknown_peer_is_refused_naming_the_choices():
    with pytest.raises(LabError, match=r"no node airflow-server9 to cut airflow-server1 off from; "
                                       r"choose from airflow-lb1, airflow-server2, master"):
        partition.peers_to_cut("airflow-server1", ["airflow-server9"], LAB)


def test_a_first_cut_creates_the_chain_drops_both_ways_and_hooks_it_first():
    assert partition.isolation_commands(UNCUT, ["10.11.12.20", "10.11.12.1"]) == [
        ["-N", CHAIN],
        ["-A", CHAIN, "-s", "10.11.12.20/32", "-j", "DROP"],
        ["-A", CHAIN, "-d", "10.11.12.20/32", "-j", "DROP"],
        ["-A", CHAIN, "-s", "10.11.12.1/32", "-j", "DROP"],
        ["-A", CHAIN, "-d", "10.11.12.1/32", "-j", "DROP"],
        ["-I", "INPUT", "1", "-j", CHAIN],
        ["-I", "OUTPUT", "1", "-j", CHAIN],
    ]


def test_the_same_cut_twice_adds_nothing():
    assert partition.isolation_commands(CUT_FROM_SERVER2, ["10.11.12.20"]) == []


def test_a_further_cut_adds_only_its_own_rules():
    assert partition.isolation_commands(CUT_FROM_SERVER2, ["10.11.12.20", "10.11.12.1"]) == [
        ["-A", CHAIN, "-s", "10.11.12.1/32", "-j", "DROP"],
        ["-A", CHAIN, "-d", "10.11.12.1/32", "-j", "DROP"],
    ]


def test_heal_unhooks_flushes_and_deletes_the_chain():
    assert partition.healing_commands(CUT_FROM_SERVER2) == [
        ["-D", "INPUT", "-j", CHAIN],
        ["-D", "OUTPUT", "-j", CHAIN],
        ["-F", CHAIN],
        ["-X", CHAIN],
    ]


def test_heal_removes_a_hook_listed_twice_twice():
    doubled = CUT_FROM_SERVER2 + f"-A INPUT -j {CHAIN}\n"
    assert partition.healing_commands(doubled)[:3] == [
        ["-D", "INPUT", "-j", CHAIN], ["-D", "OUTPUT", "-j", CHAIN], ["-D", "INPUT", "-j", CHAIN],
    ]


def test_heal_of_an_uncut_node_does_nothing():
    assert partition.healing_commands(UNCUT) == []


def test_the_cut_is_read_back_as_peer_names():
    listing = CUT_FROM_SERVER2 + f"-A {CHAIN} -s 10.11.12.1/32 -j DROP\n" \
                                f"-A {CHAIN} -d 10.11.12.1/32 -j DROP\n"
    addresses = partition.cut_addresses(listing)
    assert addresses == ["10.11.12.20", "10.11.12.1"]
    assert partition.names_of(addresses, LAB) == ["airflow-server2", "master"]
    assert partition.names_of(["10.11.12.99"], LAB) == ["10.11.12.99"]
    assert partition.cut_addresses(UNCUT) == []


def test_iptables_runs_in_the_node_network_namespace_only(monkeypatch):
    monkeypatch.setattr(Node, "leader_pid", lambda node: 4242)
    assert partition.node_iptables(Node("airflow-server1")) == \
        ["nsenter", "-t", "4242", "-n", "iptables", "-w"]


def test_a_node_that_is_not_running_cannot_be_cut(monkeypatch):
    monkeypatch.setattr(Node, "leader_pid", lambda node: None)
    with pytest.raises(LabError, match="airflow-server1 is not running"):
        partition.node_iptables(Node("airflow-server1"))


def test_without_iptables_on_the_host_the_error_names_the_fix(monkeypatch):
    monkeypatch.setattr(partition.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match="run bin/install-host-packages .*Debian package iptables"):
        partition.require_iptables()



def test_up_waits_for_the_status_problems_and_airflow_through_the_load_balancer():
    healthy = {"problems": [], "airflow_problems": []}
    assert master.unhealthy(healthy) == []
    assert master.unhealthy(None) == ["salt-run airflow_ha.status does not answer"]
    assert master.unhealthy({"problems": ["airflow-server2 does not stream"],
                             "airflow_problems": ["scheduler is unhealthy"]}) == [
        "airflow-server2 does not stream",
        "Airflow through the load balancer: scheduler is unhealthy"]

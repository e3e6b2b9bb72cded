"""The lab's decisions that need no machine: reading the lab pillar and
summarising a highstate."""

import pytest

from lab import master, settings


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

"""The lab itself: real systemd machines, a master that reaches them, a
converged highstate, a node that survives a hard power-off, and a teardown
that leaves the host as it was."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from lab.settings import BRIDGE, RULE_COMMENT, RUN_DIR
from tests.conftest import assert_converged, bin_lab, highstate, salt_json

pytestmark = pytest.mark.lab


def test_every_node_is_a_running_systemd_machine(lab):
    for name in lab:
        result = bin_lab("exec", name, "--", "systemctl", "is-system-running", check=False)
        assert result.stdout.strip() == "running", f"{name}: {result.stdout}{result.stderr}"
        hostname = bin_lab("exec", name, "--", "hostname").stdout.strip()
        assert hostname == name


def test_every_minion_answers_the_repository_master(lab):
    assert salt_json("*", "test.ping") == {name: True for name in lab}


def test_node_grains_are_debian_12_with_systemd(lab):
    grains = salt_json("*", "grains.item", "osfinger", "init")
    for name in lab:
        assert grains[name] == {"osfinger": "Debian-12", "init": "systemd"}


def test_second_highstate_reports_zero_changes(lab):
    results = highstate("*")
    assert set(results) == set(lab)
    assert_converged(results)


def test_every_node_resolves_every_cluster_name_to_its_address(lab):
    for name in lab:
        for other, address in lab.items():
            result = bin_lab("exec", name, "--", "getent", "ahostsv4", other)
            assert result.stdout.split()[0] == address, f"on {name}: {other} -> {result.stdout}"


def test_airflow_service_account_exists_without_a_login_shell(lab):
    for name in lab:
        entry = bin_lab("exec", name, "--", "getent", "passwd", "airflow").stdout.strip()
        assert entry.endswith(":/opt/airflow:/usr/sbin/nologin"), f"{name}: {entry}"


def test_exec_exits_with_the_commands_status(lab):
    name = next(iter(lab))
    assert bin_lab("exec", name, "--", "sh", "-c", "exit 7", check=False).returncode == 7


def test_node_commands_run_with_a_clean_environment(lab):
    name = next(iter(lab))
    env = subprocess.run([str(Path("bin/lab").resolve()), "exec", name, "--", "env"],
                         capture_output=True, text=True,
                         env={**os.environ, "PIP_INDEX_URL": "http://leak.invalid"}).stdout
    assert "PIP_INDEX_URL" not in env


@pytest.mark.destructive
def test_crashed_node_boots_again_with_its_disk(lab):
    name = "airflow-worker1"
    bin_lab("exec", name, "--", "sh", "-c", "echo before-crash > /root/marker && sync")
    bin_lab("crash", name)
    status = bin_lab("status").stdout
    assert re.search(rf"^{name}\s+\S+\s+down\s+minion not answering$", status, re.M), status

    bin_lab("start", name)
    assert bin_lab("exec", name, "--", "cat", "/root/marker").stdout.strip() == "before-crash"
    assert salt_json(name, "test.ping") == {name: True}
    status = bin_lab("status").stdout
    for other in lab:
        assert re.search(rf"^{other}\s+\S+\s+running\s+minion answering$", status, re.M), status


def _leftovers():
    """What of the lab is still on the host."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"systemd-nspawn") or str(RUN_DIR).encode() in cmdline:
                found.append(f"process {proc.name}: {cmdline!r}")
    found += [f"mount {line}" for line in Path("/proc/self/mounts").read_text().splitlines()
              if str(RUN_DIR) in line]
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [f"rule {line}" for line in rules.splitlines() if RULE_COMMENT in line]
    if RUN_DIR.exists():
        found.append(f"directory {RUN_DIR}")
    return found


@pytest.mark.lab_teardown
def test_down_leaves_nothing_behind(lab):
    """The last lab test: bin/lab down, as the session ends it. (Up after a
    down is what every run does, on a host where an earlier run went
    down.)"""
    saved_forward = (RUN_DIR / "ip_forward.orig").read_text()
    bin_lab("down")
    assert _leftovers() == []
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == saved_forward

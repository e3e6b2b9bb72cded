"""The StatsD bridge as the monitoring node runs it: Debian's python3 with
the mapping file Salt installs, on loopback ports; StatsD lines sent over
UDP come out of /metrics with the Helm chart's names and the sender's node
name, and promtool accepts the exposition."""

import socket
import subprocess
import time

import pytest
import requests

from tests.conftest import REPO
from tests.functional.pg_cluster import free_port

FILES = REPO / "salt" / "monitoring" / "files"


@pytest.fixture
def bridge(tmp_path):
    """(statsd port, metrics URL) of a running bridge."""
    statsd_port, web_port = free_port(), free_port()
    names = tmp_path / "nodes.yml"
    names.write_text("127.0.0.1: airflow-server1\n")
    process = subprocess.Popen(
        ["/usr/bin/python3", str(FILES / "statsd_bridge.py"),
         f"--statsd-address=127.0.0.1:{statsd_port}", f"--web-address=127.0.0.1:{web_port}",
         f"--mapping={FILES / 'airflow_statsd_mapping.yml'}", f"--node-names={names}"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert "receiving StatsD" in process.stdout.readline()
        yield statsd_port, f"http://127.0.0.1:{web_port}/metrics"
    finally:
        process.terminate()
        process.wait(10)


def scrape_until(url, text, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(url, timeout=5).text
        if text in body or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_statsd_over_udp_is_served_with_the_helm_charts_names(bridge):
    statsd_port, url = bridge
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for line in ("airflow.scheduler_heartbeat:1|c", "airflow.scheduler_heartbeat:1|c",
                     "airflow.executor.open_slots.CeleryExecutor:16|g",
                     "airflow.dag.ha_smoke.sleep.duration:250|ms"):
            sender.sendto(line.encode(), ("127.0.0.1", statsd_port))
    body = scrape_until(url, "airflow_task_duration_count")
    assert 'airflow_scheduler_heartbeat{node="airflow-server1",type="counter"} 2.0' in body
    assert ('airflow_executor_open_slots{executor="CeleryExecutor",node="airflow-server1"} 16.0'
            in body)
    assert 'airflow_task_duration_sum{dag_id="ha_smoke",node="airflow-server1",task_id="sleep"}' \
        ' 0.25' in body
    # Valid exposition; the only lint is statsd_exporter's own naming (no _total).
    lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          text=True)
    problems = [line for line in (lint.stdout + lint.stderr).splitlines()
                if line.strip() and "should have \"_total\" suffix" not in line]
    assert problems == [], lint.stdout + lint.stderr


def test_only_metrics_is_served(bridge):
    _, url = bridge
    assert requests.get(url.replace("/metrics", "/"), timeout=5).status_code == 404

"""Monitoring on the lab: Prometheus and Alertmanager on airflow-lb1 (role
monitoring), the node exporter on every node, and each database server's
replication state exported by its minion (ha_metrics). Alertmanager sends
every alert to a webhook these tests run on the host (pillar/lab/settings.sls).
The lab's waits are short: an alert fires seconds after its fault."""

import http.server
import json
import threading
import time

import pytest
import requests

from lab.settings import GATEWAY
from tests.conftest import bin_lab
from tests.lab.airflow_api import wait_until
from tests.lab.writers import SERVER1, SERVER2, salt_run, salt_run_json

pytestmark = pytest.mark.lab

PROMETHEUS = "http://10.11.12.5:9090"
WEBHOOK_PORT = 9099
RULE_GROUPS = {"airflow-ha-replication", "airflow-ha-load-balancer", "airflow-ha-airflow",
               "airflow-ha-nodes"}


class Webhook(http.server.ThreadingHTTPServer):
    """Alertmanager's webhook receiver: keeps every notification, with the
    time it arrived."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__((GATEWAY, WEBHOOK_PORT), Handler)

    def alerts(self, since=0):
        """[(arrived, status, alertname, instance)] of the alerts notified since."""
        return [(arrived, alert["status"], alert["labels"]["alertname"],
                 alert["labels"].get("instance"))
                for arrived, notification in self.received if arrived >= since
                for alert in notification["alerts"]]


@pytest.fixture(scope="module")
def webhook(lab):
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def query(expression):
    """An instant PromQL query: [(labels, value)]."""
    reply = requests.get(f"{PROMETHEUS}/api/v1/query", params={"query": expression}, timeout=10)
    reply.raise_for_status()
    return [(sample["metric"], float(sample["value"][1])) for sample in reply.json()["data"]["result"]]


def firing():
    """The alerts firing now, as Prometheus has them: {(alertname, instance)}."""
    reply = requests.get(f"{PROMETHEUS}/api/v1/alerts", timeout=10).json()
    return {(alert["labels"]["alertname"], alert["labels"].get("instance"))
            for alert in reply["data"]["alerts"] if alert["state"] == "firing"}


def pair():
    """(primary, standby): the topology record's, or before any failover
    the preferred primary's."""
    topology = salt_run_json("airflow_ha.topology")
    primary = (topology["record"] or {}).get("primary") or topology["preferred"]
    return primary, (SERVER2 if primary == SERVER1 else SERVER1)


def test_prometheus_scrapes_every_node_and_has_the_rules(lab, say):
    def targets_up():
        active = requests.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]) for t in active
                if t["health"] == "up"}

    expected = {("node", name) for name in lab} | {
        ("prometheus", "airflow-lb1"), ("alertmanager", "airflow-lb1"), ("haproxy", "airflow-lb1"),
        ("blackbox", "airflow-ui"), ("blackbox", "flower")} | {
        (job, server) for job in ("postgresql", "redis") for server in (SERVER1, SERVER2)}
    wait_until(lambda: targets_up() == expected, 60, "every target scraped")
    rules = requests.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {group["name"] for group in rules} == RULE_GROUPS
    for labels, seconds in sorted(query("scrape_duration_seconds"),
                                  key=lambda sample: (sample[0]["job"], sample[0]["instance"])):
        say(f"BENCHMARK monitoring: scrape of {labels['job']} on {labels['instance']} "
            f"{seconds * 1000:.0f} ms")
    (_, memory), = query('process_resident_memory_bytes{job="prometheus"}')
    say(f"BENCHMARK monitoring: Prometheus resident memory {memory / 2**20:.0f} MiB")


def test_the_metrics_show_one_writable_primary_and_one_master_on_the_recorded_node(lab):
    primary, standby = pair()
    wait_until(lambda: len(query("airflow_ha_postgresql_writable")) == 2, 60,
               "both servers' replication metrics")
    writable = query("airflow_ha_postgresql_writable == 1")
    masters = query("airflow_ha_redis_master == 1")
    assert [labels["instance"] for labels, _ in writable] == [primary]
    assert [labels["instance"] for labels, _ in masters] == [primary]
    recorded = query("airflow_ha_topology_recorded_primary == 1")
    assert [labels["instance"] for labels, _ in recorded] == [primary]
    streaming = query("airflow_ha_postgresql_standby_streaming == 1")
    assert [labels["standby"] for labels, _ in streaming] == [standby]
    # The exporters': the primary's PostgreSQL answers SQL (a warm standby
    # does not), both Redis servers answer, one of them a master.
    assert [labels["instance"] for labels, _ in query("pg_up == 1")] == [primary]
    assert sorted(labels["instance"] for labels, _ in query("redis_up == 1")) == [SERVER1, SERVER2]
    lag = query("scalar(max(airflow_ha_postgresql_current_lsn_bytes))"
                " - airflow_ha_postgresql_received_lsn_bytes")
    assert [labels["instance"] for labels, _ in lag] == [standby]


def test_a_healthy_lab_fires_no_alert_and_status_says_where_to_look(lab):
    wait_until(lambda: firing() == set(), 60, "no alert firing")
    returncode, output = salt_run("airflow_ha.status")
    assert returncode == 0, output
    assert (f"monitoring: Prometheus {PROMETHEUS}, Alertmanager http://10.11.12.5:9093\n"
            "alerts: none firing") in output, output


@pytest.mark.destructive
def test_a_stopped_standby_and_replica_fire_their_alerts_then_resolve(lab, webhook, say):
    primary, standby = pair()
    expected = {("PostgreSQLStandbyNotStreaming", None),
                ("RedisMasterWithoutReplica", primary)}
    stopped = time.time()
    bin_lab("exec", standby, "--", "systemctl", "stop", "postgresql@15-main", "redis-server")
    try:
        def notified(status):
            return {(name, instance) for _, state, name, instance in webhook.alerts(stopped)
                    if state == status} >= expected

        wait_until(lambda: notified("firing"), 120, "the alerts at the webhook")
        returncode, output = salt_run("airflow_ha.status")
        assert "PostgreSQLStandbyNotStreaming" in output, output
        fired = {name: min(at for at, state, alert, _ in webhook.alerts(stopped)
                           if alert == name and state == "firing") for name, _ in expected}
    finally:
        bin_lab("exec", standby, "--", "systemctl", "start", "postgresql@15-main", "redis-server")
    started = time.time()
    wait_until(lambda: notified("resolved"), 120, "the alerts resolved at the webhook")
    for name, at in sorted(fired.items()):
        say(f"BENCHMARK monitoring: {name} reached the webhook {at - stopped:.1f} s after "
            f"{standby}'s PostgreSQL and Redis stopped")
    say(f"BENCHMARK monitoring: resolved {time.time() - started:.1f} s after they started")

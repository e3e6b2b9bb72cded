"""Monitoring on the lab: Prometheus and Alertmanager on airflow-lb1 (role
monitoring), the node exporter on every node, each database server's
replication state exported by its minion (ha_metrics), Airflow's StatsD
metrics through the bridge, Flower's metrics, and the overview page through
the load balancer. Alertmanager sends every alert to a webhook these tests
run on the host (pillar/lab/settings.sls). The lab's waits are short: an
alert fires seconds after its fault."""

import http.server
import json
import threading
import time

import pytest
import requests
import yaml

from lab.settings import GATEWAY
from tests.conftest import ARTIFACTS, REPO, bin_lab, highstate
from tests.lab.airflow_api import wait_until
from tests.lab.test_airflow_tier import browser  # noqa: F401 (fixture)
from tests.lab.writers import SERVER1, SERVER2, WORKER, orchestrate, salt_run, salt_run_json

pytestmark = pytest.mark.lab

BALANCER = "10.11.12.5"
PROMETHEUS = f"http://{BALANCER}:9090"
OVERVIEW = f"https://{BALANCER}:9443/"
STATS_PASSWORD = yaml.safe_load((REPO / "pillar" / "lab" / "secrets.sls").read_text())[
    "haproxy"]["stats_password"]
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
        """[(arrived, status, alertname, labels)] of the alerts notified since."""
        return [(arrived, alert["status"], alert["labels"]["alertname"], alert["labels"])
                for arrived, notification in self.received if arrived >= since
                for alert in notification["alerts"]]

    def first(self, since, status, alertname):
        """When the first notification of alertname in status arrived, or None."""
        return min((arrived for arrived, state, name, _ in self.alerts(since)
                    if name == alertname and state == status), default=None)


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
    return [(sample["metric"], float(sample["value"][1]))
            for sample in reply.json()["data"]["result"]]


def firing():
    """The alerts firing now, as Prometheus has them: {alertname}."""
    reply = requests.get(f"{PROMETHEUS}/api/v1/alerts", timeout=10).json()
    return {alert["labels"]["alertname"] for alert in reply["data"]["alerts"]
            if alert["state"] == "firing"}


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
        ("airflow", "airflow-lb1"), ("blackbox", "airflow-ui"), ("blackbox", "flower")} | {
        (job, server) for job in ("postgresql", "redis", "flower") for server in (SERVER1, SERVER2)}
    wait_until(lambda: targets_up() == expected, 90, "every target scraped")
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


def test_airflows_own_metrics_arrive_through_the_statsd_bridge_and_flower(lab):
    """Each scheduler heartbeats under its own node name, with the Helm
    chart's metric names; Flower sees the worker online."""
    def heartbeating():
        return sorted(labels["node"] for labels, rate in query(
            "sum by (node) (rate(airflow_scheduler_heartbeat[1m]))") if rate > 0)

    wait_until(lambda: heartbeating() == [SERVER1, SERVER2], 120, "both schedulers heartbeating")
    assert query("airflow_executor_open_slots"), "the executor's slots"
    assert query('airflow_pool_open_slots{pool="default_pool"}'), "the default pool's slots"
    wait_until(lambda: [labels["worker"] for labels, _ in query(
        "max by (worker) (flower_worker_online) == 1")] == [f"celery@{WORKER}"], 120,
        "Flower sees the worker online")


def test_a_healthy_lab_fires_no_alert_and_status_says_where_to_look(lab):
    wait_until(lambda: firing() == set(), 120, "no alert firing")
    returncode, output = salt_run("airflow_ha.status")
    assert returncode == 0, output
    assert (f"monitoring: Prometheus {PROMETHEUS}, Alertmanager http://{BALANCER}:9093\n"
            f"overview page: {OVERVIEW} (HAProxy's statistics user)\n"
            "alerts: none firing") in output, output


def test_the_overview_page_needs_the_stats_password_and_shows_the_checklist(lab, browser):  # noqa: F811
    assert requests.get(OVERVIEW, timeout=10).status_code == 401
    page = requests.get(OVERVIEW, auth=("admin", STATS_PASSWORD), timeout=10)
    assert page.ok and page.url.endswith("/consoles/airflow.html")
    for text in ("Servers", "Replication", "Schedulers", "Celery workers", "Alerts firing",
                 SERVER1, SERVER2, f"celery@{WORKER}"):
        assert text in page.text, text
    browser.get(OVERVIEW.replace("https://", f"https://admin:{STATS_PASSWORD}@"))
    wait_until(lambda: "Celery workers" in browser.page_source, 30, "the page in Chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "monitoring-overview.png"))


@pytest.mark.destructive
def test_faults_fire_their_alerts_at_the_webhook_then_resolve(lab, webhook, say):
    """At once: the standby's PostgreSQL and Redis stopped, the primary's
    webserver (API server) stopped, the worker stopped, and the disk
    threshold raised past every disk's free space; each alert reaches the
    webhook, and resolves after the repair."""
    primary, standby = pair()
    webserver = "airflow-api-server"
    expected = ["PostgreSQLStandbyNotStreaming", "RedisMasterWithoutReplica",
                "LoadBalancerServerDown", "CeleryNoWorker", "DiskFilling"]
    lab_local = REPO / "pillar" / "lab" / "local.sls"
    saved = lab_local.read_text() if lab_local.exists() else None
    local = yaml.safe_load(saved or "{}") or {}
    local.setdefault("monitoring", {}).setdefault("alerts", {})["disk_free_percent"] = 99.9
    started = time.time()
    try:
        bin_lab("exec", standby, "--", "systemctl", "stop", "postgresql@15-main", "redis-server")
        bin_lab("exec", primary, "--", "systemctl", "stop", webserver)
        bin_lab("exec", WORKER, "--", "systemctl", "stop", "airflow-worker")
        lab_local.write_text(yaml.safe_dump(local))
        highstate("airflow-lb1", "monitoring.server")
        wait_until(lambda: all(webhook.first(started, "firing", name) for name in expected), 180,
                   "every alert at the webhook")
        returncode, output = salt_run("airflow_ha.status")
        assert "PostgreSQLStandbyNotStreaming" in output, output
    finally:
        if saved is None:
            lab_local.unlink(missing_ok=True)
        else:
            lab_local.write_text(saved)
        highstate("airflow-lb1", "monitoring.server")
        repaired = time.time()
        bin_lab("exec", standby, "--", "systemctl", "start", "postgresql@15-main", "redis-server")
        bin_lab("exec", primary, "--", "systemctl", "start", webserver)
        bin_lab("exec", WORKER, "--", "systemctl", "start", "airflow-worker")
    for name in expected:
        say(f"BENCHMARK monitoring: {name} reached the webhook "
            f"{webhook.first(started, 'firing', name) - started:.1f} s after the faults")
    wait_until(lambda: all(webhook.first(repaired, "resolved", name) for name in expected), 240,
               "every alert resolved at the webhook")
    say(f"BENCHMARK monitoring: all resolved {time.time() - repaired:.1f} s after the repair")


@pytest.mark.destructive
def test_a_scheduler_killed_again_and_again_fires_the_restart_loop_alert(lab, webhook, say):
    started = time.time()
    for _ in range(4):
        pid = bin_lab("exec", SERVER2, "--", "systemctl", "show", "-P", "MainPID",
                      "airflow-scheduler").stdout.strip()
        bin_lab("exec", SERVER2, "--", "kill", "-9", pid)
        wait_until(lambda: bin_lab("exec", SERVER2, "--", "systemctl", "show", "-P", "MainPID",
                                   "airflow-scheduler").stdout.strip() not in ("0", pid), 60,
                   "the scheduler restarted")
    wait_until(lambda: webhook.first(started, "firing", "PlatformUnitRestartingInALoop"), 120,
               "the restart-loop alert at the webhook")
    say(f"BENCHMARK monitoring: PlatformUnitRestartingInALoop reached the webhook "
        f"{webhook.first(started, 'firing', 'PlatformUnitRestartingInALoop') - started:.1f} s "
        "after the first kill")


@pytest.mark.destructive
def test_a_planned_failover_moves_the_metrics_without_a_two_primaries_alert(lab, webhook, say):
    primary, standby = pair()
    started = time.time()
    returncode, output = orchestrate(say, "orch.failover" if primary == SERVER1 else "orch.failback")
    assert returncode == 0, output
    wait_until(lambda: [labels["instance"] for labels, _ in query(
        "airflow_ha_postgresql_writable == 1")] == [standby], 60, "the writer metric moved")
    wait_until(lambda: [labels["instance"] for labels, _ in query(
        "airflow_ha_redis_master == 1")] == [standby], 60, "the master metric moved")
    time.sleep(30)  # past the critical alerts' wait
    false_alarms = {name for _, state, name, _ in webhook.alerts(started)} & {
        "PostgreSQLTwoWritablePrimaries", "RedisTwoMasters", "TopologyRecordDisagrees"}
    assert not false_alarms

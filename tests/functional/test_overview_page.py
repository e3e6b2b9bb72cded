"""The overview page (salt/monitoring/files/consoles/airflow.html) as the
monitoring node's Prometheus serves it: Debian's Prometheus, the platform's
alert rules, and one target serving a pair's metrics (server1 the primary,
server2 a standby whose Redis link is down). The page shows the seed's
checklist: roles, replication, schedulers heartbeating, the load balancer's
servers, workers, and the alert firing."""

import http.server
import itertools
import re
import shutil
import subprocess
import threading
import time

import pytest
import requests
import yaml

from tests.conftest import REPO
from tests.functional.pg_cluster import free_port
from tests.unit.test_alert_rules import ALERTS, rendered_rules

S1, S2, WORKER = "airflow-server1", "airflow-server2", "celery@airflow-worker1"
PAIR = f"""\
airflow_ha_postgresql_collected{{instance="{S1}"}} 1
airflow_ha_postgresql_collected{{instance="{S2}"}} 1
airflow_ha_postgresql_role{{instance="{S1}",role="primary"}} 1
airflow_ha_postgresql_role{{instance="{S2}",role="standby"}} 1
airflow_ha_postgresql_writable{{instance="{S1}"}} 1
airflow_ha_postgresql_writable{{instance="{S2}"}} 0
airflow_ha_postgresql_fenced{{instance="{S1}"}} 0
airflow_ha_postgresql_fenced{{instance="{S2}"}} 0
airflow_ha_postgresql_timeline{{instance="{S1}"}} 3
airflow_ha_postgresql_timeline{{instance="{S2}"}} 3
airflow_ha_postgresql_standby_streaming{{instance="{S1}",standby="{S2}"}} 1
airflow_ha_postgresql_standby_lag_bytes{{instance="{S1}",standby="{S2}"}} 2048
airflow_ha_postgresql_standby_lag_seconds{{instance="{S1}",standby="{S2}"}} 0.5
airflow_ha_redis_master{{instance="{S1}"}} 1
airflow_ha_redis_master{{instance="{S2}"}} 0
airflow_ha_redis_link_up{{instance="{S2}"}} 0
airflow_ha_redis_lag_bytes{{instance="{S2}"}} 1024
airflow_ha_topology_recorded_primary{{instance="{S1}",primary="{S1}"}} 1
airflow_ha_topology_recorded_primary{{instance="{S2}",primary="{S1}"}} 0
node_systemd_unit_state{{instance="{S1}",name="airflow-scheduler.service",state="active"}} 1
node_systemd_unit_state{{instance="{S2}",name="airflow-scheduler.service",state="active"}} 1
haproxy_server_status{{instance="airflow-lb1",proxy="airflow-webservers",server="{S1}",state="UP"}} 1
haproxy_server_status{{instance="airflow-lb1",proxy="airflow-webservers",server="{S2}",state="UP"}} 0
flower_worker_online{{instance="{S1}",worker="{WORKER}"}} 1
flower_worker_number_of_currently_executing_tasks{{instance="{S1}",worker="{WORKER}"}} 2
probe_success{{instance="airflow-ui",probe="airflow-ui"}} 1
"""


@pytest.fixture
def pair_target():
    """HOST:PORT of a target serving the pair's metrics; server1's scheduler
    heartbeats (its counter grows at every scrape), server2's does not."""
    scrapes = itertools.count()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            beats = next(scrapes)
            body = (PAIR + f'airflow_scheduler_heartbeat{{node="{S1}",type="counter"}} {beats}\n'
                    f'airflow_scheduler_heartbeat{{node="{S2}",type="counter"}} 7\n').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def prometheus(tmp_path, pair_target):
    """The URL of a Prometheus scraping the pair every second, with the
    platform's rules (their waits at 0) and the overview console."""
    consoles = tmp_path / "consoles"
    consoles.mkdir()
    shutil.copy(REPO / "salt" / "monitoring" / "files" / "consoles" / "airflow.html", consoles)
    (tmp_path / "rules.yml").write_text(rendered_rules(
        {**ALERTS, "pending_warning": "0s", "pending_critical": "0s"}))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "pair", "honor_labels": True,
                            "static_configs": [{"targets": [pair_target]}]}]}))
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--web.console.templates={consoles}", f"--web.console.libraries={consoles}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        process.terminate()
        process.wait(20)


def page_when(url, text, timeout=30):
    """The overview page once it shows text (rates need a few scrapes)."""
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        try:
            page = requests.get(f"{url}/consoles/airflow.html", timeout=5).text
        except requests.ConnectionError:
            pass
        if text in page:
            return page
        time.sleep(0.5)
    raise AssertionError(f"the page never showed {text!r}:\n{page}")


def cells(page):
    """The page's table rows as text: "cell | cell | ...", without markup."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S)
    return [" | ".join(re.sub(r"<[^>]+>", "", cell).strip()
                       for cell in re.findall(r"<t[dh][^>]*>(.*?)(?=<t[dh]|$)", row, re.S))
            for row in rows]


def test_the_overview_page_shows_the_checklist(prometheus):
    # Server2's heartbeat stalls: it is seen once two scrapes have a rate.
    rows = cells(page_when(prometheus, "AirflowSchedulerHeartbeatStale"))
    assert f"{S1} | primary, writable | 3 | master | {S1}" in rows
    assert f"{S2} | standby | 3 | replica | {S1}" in rows
    assert f"PostgreSQL {S2} | yes | 2kiB, 500ms" in rows
    assert f"Redis {S2} | link down | 1kiB" in rows
    scheduler = next(row for row in rows if row.startswith(f"{S1} | active | "))
    assert int(scheduler.rsplit("| ", 1)[1]) > 0  # heartbeating
    assert f"{S2} | active | 0" in rows  # its unit runs, no heartbeat: hung
    assert f"airflow-webservers | {S2} | down" in rows
    assert f"{WORKER} | online | 2" in rows
    assert "airflow-ui | healthy" in rows
    assert f"RedisReplicaLinkDown | warning | {S2}" in rows
    assert f"AirflowSchedulerHeartbeatStale | warning | {S2}" in rows

"""The platform's alert rules (salt/monitoring/files/alert_rules.yml.jinja),
rendered with the monitoring defaults and run by `promtool test rules` on
series as the servers export them: a healthy pair fires nothing, and each
fault fires its alert, naming the node, once its wait is over."""

import subprocess

import jinja2
import pytest
import yaml

from tests.conftest import REPO

MONITORING = REPO / "salt" / "monitoring"
ALERTS = yaml.safe_load((MONITORING / "defaults.yaml").read_text())["monitoring"]["alerts"]
BROKER_BACKEND = yaml.safe_load((REPO / "salt" / "haproxy" / "defaults.yaml").read_text())[
    "haproxy"]["broker_backend"]
S1, S2 = "airflow-server1", "airflow-server2"
STEPS = 40  # samples, 15 s apart: ten minutes
EVAL = "10m"
LSN = 10**9
PROXIES = ("airflow-webservers", "airflow-flowers")


# The lab's nodes of each Airflow role.
EXPECTED = {"airflow-scheduler": 2, "airflow-worker": 1}


def rendered_rules(alerts=ALERTS):
    template = (MONITORING / "files" / "alert_rules.yml.jinja").read_text()
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        template).render(alerts=alerts, expected=EXPECTED, broker_backend=BROKER_BACKEND)


RULES = yaml.safe_load(rendered_rules())
SEVERITY = {rule["alert"]: rule["labels"]["severity"]
            for group in RULES["groups"] for rule in group["rules"]}


def flat(value):
    return f"{value}x{STEPS}"


# A healthy pair: S1 the recorded primary and Redis master, S2 streaming.
HEALTHY = {
    **{f'airflow_ha_collected_timestamp_seconds{{instance="{s}"}}': f"0+15x{STEPS}"
       for s in (S1, S2)},
    **{f'airflow_ha_postgresql_running{{instance="{s}"}}': flat(1) for s in (S1, S2)},
    f'airflow_ha_postgresql_writable{{instance="{S1}"}}': flat(1),
    f'airflow_ha_postgresql_writable{{instance="{S2}"}}': flat(0),
    f'airflow_ha_topology_recorded_primary{{instance="{S1}",primary="{S1}"}}': flat(1),
    f'airflow_ha_topology_recorded_primary{{instance="{S2}",primary="{S1}"}}': flat(0),
    f'airflow_ha_postgresql_standby_streaming{{instance="{S1}",standby="{S2}"}}': flat(1),
    f'airflow_ha_postgresql_standby_lag_seconds{{instance="{S1}",standby="{S2}"}}': flat(0),
    f'airflow_ha_postgresql_slot_active{{instance="{S1}",slot="airflow_server2"}}': flat(1),
    f'airflow_ha_postgresql_current_lsn_bytes{{instance="{S1}"}}': flat(LSN),
    f'airflow_ha_postgresql_received_lsn_bytes{{instance="{S2}"}}': flat(LSN),
    f'airflow_ha_redis_master{{instance="{S1}"}}': flat(1),
    f'airflow_ha_redis_master{{instance="{S2}"}}': flat(0),
    f'airflow_ha_redis_link_up{{instance="{S2}"}}': flat(1),
    f'airflow_ha_redis_connected_replicas{{instance="{S1}"}}': flat(1),
    **{f'haproxy_server_status{{instance="airflow-lb1",proxy="{proxy}",server="{s}",'
       'state="UP"}': flat(1) for s in (S1, S2) for proxy in PROXIES},
    **{f'haproxy_backend_active_servers{{instance="airflow-lb1",proxy="{proxy}"}}': flat(2)
       for proxy in PROXIES},
    'haproxy_backend_active_servers{instance="airflow-lb1",proxy="redis-master"}': flat(1),
    **{f'probe_success{{instance="{probe}",probe="{probe}"}}': flat(1)
       for probe in ("airflow-ui", "flower")},
    **{f'node_systemd_unit_state{{instance="{s}",name="airflow-scheduler.service",'
       'state="active"}': flat(1) for s in (S1, S2)},
    'node_systemd_unit_state{instance="airflow-worker1",name="airflow-worker.service",'
    'state="active"}': flat(1),
    f'node_systemd_unit_state{{instance="{S1}",name="airflow-scheduler.service",'
    'state="failed"}': flat(0),
    f'node_systemd_service_restart_total{{instance="{S1}",name="airflow-scheduler.service"}}':
        flat(0),
    f'node_filesystem_avail_bytes{{instance="{S1}",mountpoint="/",fstype="ext4"}}': flat(50),
    **{f'airflow_scheduler_heartbeat{{instance="airflow-lb1",node="{s}",type="counter"}}':
       f"0+3x{STEPS}" for s in (S1, S2)},
    **{f'flower_worker_online{{instance="{s}",worker="celery@airflow-worker1"}}': flat(1)
       for s in (S1, S2)},
    f'node_filesystem_size_bytes{{instance="{S1}",mountpoint="/",fstype="ext4"}}': flat(100),
}

# (alert, the series that change, the labels of the alert that fires)
FAULTS = [
    ("PostgreSQLTwoWritablePrimaries",
     {f'airflow_ha_postgresql_writable{{instance="{S2}"}}': flat(1)}, {}),
    ("PostgreSQLNoWritablePrimary",
     {f'airflow_ha_postgresql_writable{{instance="{S1}"}}': flat(0)}, {}),
    ("PostgreSQLPrimaryDown",
     {f'airflow_ha_postgresql_running{{instance="{S1}"}}': flat(0),
      f'airflow_ha_postgresql_writable{{instance="{S1}"}}': flat(0)}, {"instance": S1}),
    ("TopologyRecordDisagrees",
     {f'airflow_ha_postgresql_writable{{instance="{S1}"}}': flat(0),
      f'airflow_ha_postgresql_writable{{instance="{S2}"}}': flat(1)}, {"instance": S2}),
    ("TopologyRecordDisagrees",
     {f'airflow_ha_redis_master{{instance="{S1}"}}': flat(0),
      f'airflow_ha_redis_master{{instance="{S2}"}}': flat(1)}, {"instance": S2}),
    ("PostgreSQLStandbyNotStreaming",
     {f'airflow_ha_postgresql_standby_streaming{{instance="{S1}",standby="{S2}"}}': flat(0)}, {}),
    ("PostgreSQLReplicationLagBytes",
     {f'airflow_ha_postgresql_received_lsn_bytes{{instance="{S2}"}}':
      flat(LSN - ALERTS["replication_lag_bytes"] - 1)}, {"instance": S2}),
    ("PostgreSQLReplicationLagSeconds",
     {f'airflow_ha_postgresql_standby_lag_seconds{{instance="{S1}",standby="{S2}"}}':
      flat(ALERTS["replication_lag_seconds"] + 1)}, {"instance": S1, "standby": S2}),
    ("PostgreSQLReplicationSlotInactive",
     {f'airflow_ha_postgresql_slot_active{{instance="{S1}",slot="airflow_server2"}}': flat(0)},
     {"instance": S1, "slot": "airflow_server2"}),
    ("RedisNoMaster", {f'airflow_ha_redis_master{{instance="{S1}"}}': flat(0)}, {}),
    ("RedisTwoMasters", {f'airflow_ha_redis_master{{instance="{S2}"}}': flat(1)}, {}),
    ("RedisMasterWithoutReplica",
     {f'airflow_ha_redis_connected_replicas{{instance="{S1}"}}': flat(0)}, {"instance": S1}),
    ("RedisReplicaLinkDown", {f'airflow_ha_redis_link_up{{instance="{S2}"}}': flat(0)},
     {"instance": S2}),
    ("LoadBalancerServerDown",
     {f'haproxy_server_status{{instance="airflow-lb1",proxy="airflow-flowers",server="{S2}",'
      'state="UP"}': flat(0)},
     {"instance": "airflow-lb1", "proxy": "airflow-flowers", "server": S2, "state": "UP"}),
    ("LoadBalancerBackendDown",
     {'haproxy_backend_active_servers{instance="airflow-lb1",proxy="airflow-webservers"}':
      flat(0)}, {"instance": "airflow-lb1", "proxy": "airflow-webservers"}),
    *[("BrokerFrontendWithoutOneMaster",
       {'haproxy_backend_active_servers{instance="airflow-lb1",proxy="redis-master"}':
        flat(masters)}, {"instance": "airflow-lb1", "proxy": "redis-master"})
      for masters in (0, 2)],
    ("AirflowUnhealthyThroughLoadBalancer",
     {'probe_success{instance="airflow-ui",probe="airflow-ui"}': flat(0)},
     {"instance": "airflow-ui", "probe": "airflow-ui"}),
    ("FlowerUnreachableThroughLoadBalancer",
     {'probe_success{instance="flower",probe="flower"}': flat(0)},
     {"instance": "flower", "probe": "flower"}),
    ("AirflowSchedulersMissing",
     {f'node_systemd_unit_state{{instance="{S2}",name="airflow-scheduler.service",'
      'state="active"}': flat(0)}, {}),
    ("AirflowSchedulerHeartbeatStale",
     {f'airflow_scheduler_heartbeat{{instance="airflow-lb1",node="{S2}",type="counter"}}':
      f"0+3x{STEPS // 2} {3 * STEPS // 2}x{STEPS // 2}"}, {"node": S2}),
    ("AirflowSchedulersNotHeartbeating",
     {f'airflow_scheduler_heartbeat{{instance="airflow-lb1",node="{S2}",type="counter"}}':
      flat(7)}, {}),
    ("CeleryWorkerOffline",
     {f'flower_worker_online{{instance="{s}",worker="celery@airflow-worker1"}}': flat(0)
      for s in (S1, S2)}, {"worker": "celery@airflow-worker1"}),
    ("CeleryNoWorker",
     {'node_systemd_unit_state{instance="airflow-worker1",name="airflow-worker.service",'
      'state="active"}': flat(0)}, {}),
    ("AirflowHAMetricsStale",
     {f'airflow_ha_collected_timestamp_seconds{{instance="{S2}"}}': flat(0)}, {"instance": S2}),
    ("PlatformUnitFailed",
     {f'node_systemd_unit_state{{instance="{S1}",name="airflow-scheduler.service",'
      'state="failed"}': flat(1)},
     {"instance": S1, "name": "airflow-scheduler.service", "state": "failed"}),
    ("PlatformUnitRestartingInALoop",
     {f'node_systemd_service_restart_total{{instance="{S1}",name="airflow-scheduler.service"}}':
      f"0+1x{STEPS}"}, {"instance": S1, "name": "airflow-scheduler.service"}),
    ("DiskFilling",
     {f'node_filesystem_avail_bytes{{instance="{S1}",mountpoint="/",fstype="ext4"}}':
      flat(ALERTS["disk_free_percent"] - 1)},
     {"instance": S1, "mountpoint": "/", "fstype": "ext4"}),
]


def without_annotations(rules):
    """The rules as promtool tests them here: labels and timing, not the
    texts (test_the_rules_and_their_texts_are_valid checks those)."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return rules


def promtool_test(tmp_path, series, checks):
    """Run `promtool test rules` on the series ({series: values}) with the
    alert checks ([(eval_time, alertname, [labels...])])."""
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(without_annotations(
        yaml.safe_load(rendered_rules()))))
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [
            {"eval_time": at, "alertname": alert,
             "exp_alerts": [{"exp_labels": {"severity": SEVERITY[alert], **labels}}
                            for labels in fired]}
            for at, alert, fired in checks]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    result = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path,
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def test_the_rules_and_their_texts_are_valid(tmp_path):
    (tmp_path / "rules.yml").write_text(rendered_rules())
    result = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(SEVERITY) == sorted({alert for alert, _, _ in FAULTS})


def test_a_healthy_pair_fires_nothing(tmp_path):
    returncode, output = promtool_test(tmp_path, HEALTHY,
                                       [(EVAL, alert, []) for alert in SEVERITY])
    assert returncode == 0, output


@pytest.mark.parametrize("alert, changed, labels", FAULTS,
                         ids=[f"{alert}-{index}" for index, (alert, _, _) in enumerate(FAULTS)])
def test_each_fault_fires_its_alert(tmp_path, alert, changed, labels):
    returncode, output = promtool_test(tmp_path, {**HEALTHY, **changed},
                                       [(EVAL, alert, [labels])])
    assert returncode == 0, output


def test_two_writers_fire_only_after_the_critical_wait(tmp_path):
    """A failover's switch never has two writers, but each server's metrics
    are collected apart: a short overlap must not page."""
    wait = int(ALERTS["pending_critical"].rstrip("s"))
    start = 300
    series = {**HEALTHY, f'airflow_ha_postgresql_writable{{instance="{S2}"}}':
              f"0x{start // 15 - 1} 1x{STEPS - start // 15}"}
    returncode, output = promtool_test(tmp_path, series, [
        (f"{start + wait - 15}s", "PostgreSQLTwoWritablePrimaries", []),
        (f"{start + wait}s", "PostgreSQLTwoWritablePrimaries", [{}])])
    assert returncode == 0, output


def test_the_thresholds_come_from_the_settings():
    text = rendered_rules({**ALERTS, "replication_lag_bytes": 12345, "pending_warning": "7m"})
    lag = next(rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]
               if rule["alert"] == "PostgreSQLReplicationLagBytes")
    assert lag["expr"].endswith("> 12345") and lag["for"] == "7m"
    assert "(12345)" in lag["annotations"]["description"]

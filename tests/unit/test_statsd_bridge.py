"""The StatsD bridge's parts without sockets: StatsD lines parsed, names
mapped as statsd_exporter maps them with the mapping file Salt installs,
values added up by kind, and the exposition Prometheus reads."""

import importlib.util

import pytest
import yaml

from tests.conftest import REPO

FILES = REPO / "salt" / "monitoring" / "files"
spec = importlib.util.spec_from_file_location("statsd_bridge", FILES / "statsd_bridge.py")
bridge = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bridge)

MAPPINGS = bridge.compile_mappings(
    yaml.safe_load((FILES / "airflow_statsd_mapping.yml").read_text())["mappings"])


@pytest.mark.parametrize("line, parsed", [
    ("airflow.scheduler_heartbeat:1|c", ("airflow.scheduler_heartbeat", "c", 1.0, 1.0)),
    ("airflow.ti_successes:2|c|@0.5", ("airflow.ti_successes", "c", 2.0, 0.5)),
    ("airflow.pool.open_slots.default_pool:128|g",
     ("airflow.pool.open_slots.default_pool", "g", 128.0, 1.0)),
    ("airflow.executor.queued_tasks:-2|g", ("airflow.executor.queued_tasks", "relative gauge",
                                            -2.0, 1.0)),
    ("airflow.dag.ha_smoke.sleep.duration:1520.5|ms|#host:a",
     ("airflow.dag.ha_smoke.sleep.duration", "ms", 1520.5, 1.0)),
])
def test_statsd_lines_are_parsed(line, parsed):
    assert bridge.parse_line(line) == parsed


@pytest.mark.parametrize("line", ["no value", "a:1", "a:x|c", "a:1|s", ":1|c", "a:1|c|@0",
                                  "a:1|c|@x"])
def test_what_is_not_a_statsd_line_is_refused(line):
    assert bridge.parse_line(line) is None


@pytest.mark.parametrize("statsd_name, name, labels", [
    ("airflow.scheduler_heartbeat", "airflow_scheduler_heartbeat", {"type": "counter"}),
    ("airflow.pool.open_slots.default_pool", "airflow_pool_open_slots", {"pool": "default_pool"}),
    ("airflow.executor.open_slots.CeleryExecutor", "airflow_executor_open_slots",
     {"executor": "CeleryExecutor"}),
    ("airflow.dag.ha_smoke.sleep.duration", "airflow_task_duration",
     {"dag_id": "ha_smoke", "task_id": "sleep"}),
    ("airflow.dagrun.duration.success.ha_smoke", "airflow_dagrun_duration", {"dag_id": "ha_smoke"}),
    ("airflow.operator_failures_PythonOperator", "airflow_operator_failures",
     {"operator": "PythonOperator"}),
    ("airflow.dag_processing.last_run.seconds_ago.ha_smoke", "airflow_dag_processing_last_run"
     "_seconds_ago", {"dag_file": "ha_smoke"}),
    # No mapping: the StatsD name, escaped as statsd_exporter escapes it.
    ("airflow.executor.open_slots", "airflow_executor_open_slots", {}),
    ("airflow.celery.task-timeout-error", "airflow_celery_task_timeout_error", {}),
    ("5xx.count", "_5xx_count", {}),
])
def test_names_follow_the_helm_charts_mapping(statsd_name, name, labels):
    assert bridge.map_name(MAPPINGS, statsd_name) == (name, labels)


def test_a_glob_star_matches_one_dotted_part_only():
    # airflow.dag.*.*.duration needs exactly two parts between dag and duration.
    assert bridge.map_name(MAPPINGS, "airflow.dag.a.b.c.duration")[1] == {}


def received(*datagrams, sender="10.11.12.10"):
    store = bridge.Store(MAPPINGS, {"10.11.12.10": "airflow-server1",
                                    "10.11.12.20": "airflow-server2"})
    for datagram in datagrams:
        store.receive(datagram.encode(), sender)
    return store


def test_counters_add_up_scaled_by_their_rate_per_sending_node():
    store = received("airflow.scheduler_heartbeat:1|c\nairflow.scheduler_heartbeat:1|c",
                     "airflow.ti_successes:1|c|@0.25")
    store.receive(b"airflow.scheduler_heartbeat:1|c", "10.11.12.20")
    text = store.exposition()
    assert "# TYPE airflow_scheduler_heartbeat counter" in text
    assert 'airflow_scheduler_heartbeat{node="airflow-server1",type="counter"} 2.0' in text
    assert 'airflow_scheduler_heartbeat{node="airflow-server2",type="counter"} 1.0' in text
    assert 'airflow_ti_successes{node="airflow-server1"} 4.0' in text


def test_gauges_are_set_or_moved_and_timers_are_summaries_in_seconds():
    text = received("airflow.pool.open_slots.default_pool:128|g",
                    "airflow.pool.open_slots.default_pool:-3|g",
                    "airflow.dag.ha_smoke.sleep.duration:1500|ms",
                    "airflow.dag.ha_smoke.sleep.duration:500|ms").exposition()
    assert 'airflow_pool_open_slots{node="airflow-server1",pool="default_pool"} 125.0' in text
    assert "# TYPE airflow_task_duration summary" in text
    labels = '{dag_id="ha_smoke",node="airflow-server1",task_id="sleep"}'
    assert f"airflow_task_duration_count{labels} 2.0" in text
    assert f"airflow_task_duration_sum{labels} 2.0" in text


def test_an_unknown_sender_is_named_by_its_address():
    text = received("airflow.scheduler_heartbeat:1|c", sender="192.0.2.7").exposition()
    assert 'node="192.0.2.7"' in text


def test_bad_lines_and_a_name_sent_as_another_type_are_counted_not_kept():
    text = received("airflow.scheduler_heartbeat:1|c", "airflow.scheduler_heartbeat:5|g",
                    "garbage", "airflow.ti_failures:-1|c").exposition()
    assert "statsd_bridge_lines_total 4" in text
    assert "statsd_bridge_lines_rejected_total 3" in text
    assert 'airflow_scheduler_heartbeat{node="airflow-server1",type="counter"} 1.0' in text
    assert "airflow_ti_failures" not in text


def test_label_values_are_escaped():
    store = received()
    store.add(("airflow.pool.open_slots.a", "g", 1.0, 1.0), 'odd "node"\\\n')
    assert r'node="odd \"node\"\\\n"' in store.exposition()

"""ha_core.report: the status table ``salt-run airflow_ha.status`` prints, and
the pre-flight's plan lines."""

import re

from ha_core.report import add_standby_lag, plan_lines, status_table, status_text

S1, S2 = "airflow-server1", "airflow-server2"


# --- status_table --------------------------------------------------------------------

COLUMNS = ("node", "postgresql", "timeline", "lag", "redis", "offset")
ROWS = [
    {"node": S1, "postgresql": "primary", "timeline": 2, "lag": "-", "redis": "master",
     "offset": 1250},
    {"node": S2, "postgresql": "standby (fenced) (streaming)", "timeline": 2, "lag": 0,
     "redis": "replica (up)", "offset": "1200 (lag 50)"},
    {"node": "airflow-server3", "postgresql": "no answer", "timeline": "-", "lag": "-",
     "redis": "no answer", "offset": "-"},
]
RECORD = f"{S2} since 2026-11-24T08:25:36+00:00 (orch.failover (planned))"
AIRFLOW = "http://10.11.12.30:8080/health: healthy"


def column_starts(header_line):
    return [match.start() for match in re.finditer(r"\S+", header_line)]


def test_the_status_table_starts_with_the_column_header():
    lines = status_table(ROWS, RECORD, AIRFLOW).splitlines()
    assert lines[0].split() == list(COLUMNS)


def test_every_cell_of_the_status_table_starts_under_its_column_header():
    lines = status_table(ROWS, RECORD, AIRFLOW).splitlines()
    starts = column_starts(lines[0])
    assert len(starts) == len(COLUMNS)
    for row, line in zip(ROWS, lines[1:1 + len(ROWS)]):
        ends = starts[1:] + [len(line)]
        cells = [line[start:end].rstrip() for start, end in zip(starts, ends)]
        assert cells == [str(row[column]) for column in COLUMNS], line
        for start in starts[1:]:
            assert line[start - 2:start] == "  ", line  # at least two spaces between columns


def test_the_status_table_has_one_row_per_node_in_order():
    lines = status_table(ROWS, RECORD, AIRFLOW).splitlines()
    assert [line.split()[0] for line in lines[1:1 + len(ROWS)]] == [S1, S2, "airflow-server3"]


def test_the_status_table_ends_with_the_record_and_airflow_lines():
    lines = status_table(ROWS, RECORD, AIRFLOW).splitlines()
    assert lines[-3:] == ["", f"topology record: {RECORD}", f"airflow: {AIRFLOW}"]
    assert len(lines) == 1 + len(ROWS) + 3


def test_the_status_table_has_no_trailing_spaces():
    for line in status_table(ROWS, RECORD, AIRFLOW).splitlines():
        assert line == line.rstrip()


def test_a_status_table_without_nodes_still_has_its_header_and_footer():
    assert status_table([], "none yet", "no haproxy node in the pillar").splitlines() == [
        "  ".join(COLUMNS), "", "topology record: none yet",
        "airflow: no haproxy node in the pillar"]


def test_a_standby_gets_the_lag_its_primary_reports():
    states = {S1: {"role": "primary", "standbys": [{"application_name": S2, "lag_bytes": 42}]},
              S2: {"role": "standby"}}
    add_standby_lag(states)
    assert states[S2]["lag_bytes"] == 42 and "lag_bytes" not in states[S1]


def test_the_status_text_lists_problems_and_says_when_there_is_no_record():
    status = {"nodes": {S1: {"postgresql": None, "redis": None}}, "record": None,
              "record_path": "/x", "airflow_health_url": None, "airflow_health": None,
              "problems": [f"{S1}, the recorded primary, does not answer"]}
    text = status_text(status, S1)
    assert f"topology record: none yet: the primary is cluster:primary, {S1}" in text
    assert text.endswith(f"problems:\n  - {S1}, the recorded primary, does not answer")
    assert "no answer" in text.splitlines()[1]


def test_a_refused_plan_says_why_and_nothing_else():
    lines = plan_lines({"down": [S1], "states": {}, "refused": "no", "mode": None})
    assert lines == [f"    not answering: {S1}", "    REFUSED: no"]


def test_a_finishing_plan_says_which_run_it_finishes_and_who_rejoins():
    lines = plan_lines({"down": [], "states": {}, "refused": None, "mode": "finish",
                        "old": S2, "new": S2, "rejoin": S1, "airflow_nodes": [S1, S2]})
    assert lines == [
        f"    plan: rejoin {S1} as a standby of {S2} (pg_rewind, or a base backup), Redis follows",
        f"    plan: finish the orch.failover that recorded {S2} as the primary: Airflow on "
        f"{S1}, {S2} follows it, then verify; each step skips what is done"]


def test_the_status_text_shows_where_monitoring_is_and_the_alerts_firing_critical_first():
    status = {"nodes": {}, "record": None, "record_path": "/x", "airflow_health_url": None,
              "airflow_health": None, "problems": [], "monitoring": {
                  "prometheus": "http://10.0.0.5:9090", "alertmanager": "http://10.0.0.5:9093",
                  "alerts": [
                      {"alertname": "RedisReplicaLinkDown", "severity": "warning",
                       "instance": S2, "summary": "link lost"},
                      {"alertname": "PostgreSQLNoWritablePrimary", "severity": "critical",
                       "instance": None, "summary": "no writer"}]}}
    lines = status_text(status, S1).splitlines()
    assert lines[-4:] == [
        "monitoring: Prometheus http://10.0.0.5:9090, Alertmanager http://10.0.0.5:9093",
        "alerts firing:",
        "  - critical: PostgreSQLNoWritablePrimary: no writer",
        f"  - warning: RedisReplicaLinkDown on {S2}: link lost"]
    status["monitoring"]["alerts"] = {"error": "connection refused"}
    assert status_text(status, S1).endswith(
        "alerts: Prometheus does not answer (connection refused)")
    status["monitoring"]["alerts"] = []
    assert status_text(status, S1).endswith("alerts: none firing")
    status["monitoring"]["overview"] = "https://10.0.0.6:9443/"
    assert status_text(status, S1).splitlines()[-2] == (
        "overview page: https://10.0.0.6:9443/ (HAProxy's statistics user)")

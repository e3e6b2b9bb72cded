"""ha_core.metrics: a server's replication state as Prometheus metrics, from
realistic statuses, checked by promtool as Prometheus would read them."""

import subprocess

from ha_core.metrics import exposition, server_samples
from tests.unit.test_failover import (S1, S2, pg_primary, pg_standby, pg_stopped, redis_master,
                                      redis_replica)

NOW = 1764600000.25
RECORD = {"primary": S1, "generation": 3}


def series(text):
    """{'name{labels}': 'value'} of an exposition."""
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def promtool_check(text):
    """promtool's lint of an exposition: its exit status and what it said."""
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            text=True)
    return result.returncode, result.stdout + result.stderr


def test_a_primary_exports_its_role_position_standbys_and_slots():
    text = exposition(server_samples(S1, pg_primary(S1, {S2: "streaming"}), redis_master([S2]),
                                     RECORD, NOW))
    got = series(text)
    assert got["airflow_ha_collected_timestamp_seconds"] == "1764600000.25"
    assert got['airflow_ha_postgresql_role{role="primary"}'] == "1"
    assert got['airflow_ha_postgresql_role{role="standby"}'] == "0"
    assert got["airflow_ha_postgresql_writable"] == "1"
    assert got["airflow_ha_postgresql_current_lsn_bytes"] == str(0x3000148)
    assert got[f'airflow_ha_postgresql_standby_streaming{{standby="{S2}"}}'] == "1"
    assert got[f'airflow_ha_postgresql_standby_lag_bytes{{standby="{S2}"}}'] == "0"
    # Replay lag in seconds is unknown while nothing was replayed: no series, not a 0.
    assert not any(key.startswith("airflow_ha_postgresql_standby_lag_seconds") for key in got)
    assert got['airflow_ha_postgresql_slot_active{slot="airflow_server2"}'] == "1"
    assert got["airflow_ha_redis_master"] == "1"
    assert got["airflow_ha_redis_connected_replicas"] == "1"
    assert got[f'airflow_ha_topology_recorded_primary{{primary="{S1}"}}'] == "1"
    assert got["airflow_ha_topology_generation"] == "3"
    assert promtool_check(text) == (0, "")


def test_a_warm_standby_exports_what_its_files_show_and_a_down_redis_link():
    text = exposition(server_samples(S2, pg_standby(S2, S1), redis_replica(S1, link="down"),
                                     RECORD, NOW))
    got = series(text)
    assert got['airflow_ha_postgresql_role{role="standby"}'] == "1"
    assert got["airflow_ha_postgresql_writable"] == "0"
    assert got["airflow_ha_postgresql_wal_receiver_streaming"] == "1"
    assert got["airflow_ha_postgresql_received_lsn_bytes"] == str(0x3000148)
    assert got["airflow_ha_postgresql_replayed_lsn_bytes"] == str(0x3000000)
    assert got["airflow_ha_redis_master"] == "0"
    assert got["airflow_ha_redis_link_up"] == "0"
    assert got["airflow_ha_redis_link_down_seconds"] == "42"
    assert "airflow_ha_redis_lag_bytes" not in got  # unknown while the link is down
    assert got[f'airflow_ha_topology_recorded_primary{{primary="{S1}"}}'] == "0"
    assert promtool_check(text) == (0, "")


def test_a_fenced_stopped_server_and_a_silent_redis_export_what_is_known():
    got = series(exposition(server_samples(S1, pg_stopped(S1), None, None, NOW)))
    assert got["airflow_ha_postgresql_running"] == "0"
    assert got['airflow_ha_postgresql_role{role="stopped"}'] == "1"
    assert got["airflow_ha_postgresql_fenced"] == "1"
    assert got["airflow_ha_postgresql_writable"] == "0"
    assert got["airflow_ha_redis_collected"] == "0"
    assert not any(key.startswith(("airflow_ha_redis_master", "airflow_ha_topology"))
                   for key in got)


def test_a_fenced_primary_is_not_counted_writable():
    got = series(exposition(server_samples(S1, pg_primary(S1, fenced=True), None, RECORD, NOW)))
    assert got["airflow_ha_postgresql_writable"] == "0"


def test_a_status_that_did_not_answer_is_exported_as_not_collected():
    got = series(exposition(server_samples(S1, None, None, RECORD, NOW)))
    assert got["airflow_ha_postgresql_collected"] == "0"
    assert not any(key.startswith("airflow_ha_postgresql_role") for key in got)


def test_label_values_are_escaped():
    record = {"primary": 'odd "name"\\x\n', "generation": 1}
    text = exposition(server_samples(S1, None, None, record, NOW))
    assert 'primary="odd \\"name\\"\\\\x\\n"' in text
    assert promtool_check(text) == (0, "")

"""ha_metrics against real servers: a PostgreSQL primary pg-a with its warm
standby pg-b (pg_cluster.py) and a Redis master with its replica
(redis_pair.py) on loopback, each "server" a minion with its own settings;
what they write is what the node exporter's textfile collector would read,
and promtool accepts it."""

import json
import subprocess

import pytest

from tests.functional.pg_cluster import pg_nodes, pg_pair, wait_for  # noqa: F401 (fixtures)
from tests.functional.redis_pair import redis_pair, redis_servers  # noqa: F401 (fixtures)
from tests.unit.test_metrics import series


@pytest.fixture
def servers(pg_pair, redis_pair, make_loaders, tmp_path):  # noqa: F811
    """{name: ha_metrics} of two servers: pg-a with the Redis master, pg-b
    with the replica; their copy of the topology record names pg-a."""
    record = tmp_path / "topology.json"
    record.write_text(json.dumps({"primary": "pg-a", "generation": 2}))
    modules = {}
    for node, redis_server in zip((pg_pair.primary, pg_pair.standby), redis_pair):
        textfile = tmp_path / node.name / "airflow_ha.prom"
        textfile.parent.mkdir()
        loaders = make_loaders(
            id=node.name, pg_replication=node.settings,
            redis_replication={"host": "127.0.0.1", "port": redis_server.port,
                               "password_file": str(redis_server.config_file),
                               "role_file": str(redis_server.role_file)},
            ha_metrics={"textfile": str(textfile), "topology_record": str(record)})
        modules[node.name] = loaders.modules.ha_metrics
    return modules


def exported(module):
    """Write the metrics; return what the file holds, as series."""
    result = module.write()
    with open(result["path"], encoding="utf-8") as handle:
        text = handle.read()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    got = series(text)
    assert result["series"] == len(got)
    return got


def test_both_servers_export_one_writable_primary_one_master_and_the_lag(servers, pg_pair):  # noqa: F811
    pg_pair.primary.sql("create table burst as select generate_series(1, 10000) as n")
    primary = exported(servers["pg-a"])
    standby = exported(servers["pg-b"])
    writable = [got["airflow_ha_postgresql_writable"] for got in (primary, standby)]
    masters = [got["airflow_ha_redis_master"] for got in (primary, standby)]
    assert (writable, masters) == (["1", "0"], ["1", "0"])
    assert primary['airflow_ha_postgresql_standby_streaming{standby="pg-b"}'] == "1"
    assert primary['airflow_ha_postgresql_slot_active{slot="pg_b"}'] == "1"
    assert standby["airflow_ha_postgresql_wal_receiver_streaming"] == "1"
    assert standby["airflow_ha_redis_link_up"] == "1"
    assert primary['airflow_ha_topology_recorded_primary{primary="pg-a"}'] == "1"
    assert standby['airflow_ha_topology_recorded_primary{primary="pg-a"}'] == "0"
    # The lag between the two is a difference of their series.
    assert int(primary["airflow_ha_postgresql_current_lsn_bytes"]) >= int(
        standby["airflow_ha_postgresql_received_lsn_bytes"]) > 0


def test_a_stopped_standby_and_its_primarys_lost_walsender_show(servers, pg_pair):  # noqa: F811
    pg_pair.standby.stop()
    standby = exported(servers["pg-b"])
    assert standby["airflow_ha_postgresql_running"] == "0"
    assert standby['airflow_ha_postgresql_role{role="stopped"}'] == "1"
    wait_for(lambda: 'standby="pg-b"' not in servers["pg-a"].collect(), 10,
             "the primary's walsender for pg-b gone")
    primary = exported(servers["pg-a"])
    assert primary['airflow_ha_postgresql_slot_active{slot="pg_b"}'] == "0"

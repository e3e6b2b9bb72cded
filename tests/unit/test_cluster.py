"""ha_core.cluster: the cluster model, the topology record and the
settings merge the runner shares with salt/settings.jinja."""

import copy
import json

import pytest
import yaml

from ha_core.cluster import (
    RECORD_OPTION,
    Cluster,
    airflow_units,
    component_settings,
    merge,
    new_record,
    read_record,
    record_path,
    write_record,
)
from ha_core.errors import InvalidInput, Refused
from tests.conftest import REPO
from tests.topology_cases import PRIMARY_CASES

LAB = {**yaml.safe_load((REPO / "pillar" / "lab" / "cluster.sls").read_text())}
AIRFLOW_VERSIONMAP = yaml.safe_load((REPO / "salt" / "airflow" / "versionmap.yaml").read_text())


def airflow_settings(version, pillar=None):
    return component_settings("airflow", {"version": "3.3.2", "webserver": {"port": 8080}}, {},
                              {"airflow": dict(pillar or {}, version=version)}, AIRFLOW_VERSIONMAP)


@pytest.mark.parametrize("name, record, expected", PRIMARY_CASES, ids=[c[0] for c in PRIMARY_CASES])
def test_the_primary_is_the_records_or_the_preferred_one(name, record, expected):
    pillar = dict(LAB, **({"topology": record} if record is not None else {}))
    assert Cluster(pillar).primary == expected


def test_nodes_are_found_by_role_and_addresses_in_one_place():
    cluster = Cluster(LAB)
    assert cluster.database_nodes() == ["airflow-server1", "airflow-server2"]
    assert cluster.redis_nodes() == ["airflow-server1", "airflow-server2"]
    assert "airflow-worker1" in cluster.airflow_nodes()
    assert cluster.address("airflow-server2") == "10.11.12.20"
    assert cluster.other("airflow-server1") == "airflow-server2"


def test_the_monitoring_urls_are_on_the_monitoring_node_if_there_is_one():
    ports = {"ports": {"prometheus": 9090, "alertmanager": 9093, "overview": 9443}}
    assert Cluster(LAB).monitoring_urls(ports) == {  # the lab's is its load balancer
        "prometheus": "http://10.11.12.5:9090", "alertmanager": "http://10.11.12.5:9093",
        "overview": "https://10.11.12.5:9443/"}
    unmonitored = copy.deepcopy(LAB)
    unmonitored["cluster"]["nodes"]["airflow-lb1"]["roles"] = ["haproxy"]
    assert Cluster(unmonitored).monitoring_urls(ports) is None


def test_an_unknown_node_name_is_refused_naming_the_known_ones():
    with pytest.raises(InvalidInput, match="'airflow-server9' is not a node of the pillar; "
                                           "name one of airflow-lb1, airflow-server1"):
        Cluster(LAB).address("airflow-server9")


def test_failover_needs_exactly_two_database_nodes():
    pillar = {"cluster": {"nodes": {"a": {"address": "1", "roles": ["postgresql"]}}}}
    with pytest.raises(Refused, match="exactly two database nodes"):
        Cluster(pillar).other("a")


def test_the_record_path_is_a_master_option_with_its_fix_named():
    assert record_path({RECORD_OPTION: "/srv/topology.json"}) == "/srv/topology.json"
    with pytest.raises(InvalidInput, match=f"{RECORD_OPTION} is not set.*site.conf"):
        record_path({})


def test_a_record_is_written_atomically_and_read_back(tmp_path):
    path = str(tmp_path / "deep" / "topology.json")
    assert read_record(path) is None
    record = new_record("airflow-server2", "airflow-server1", "orch.failover")
    write_record(path, record)
    assert read_record(path) == record
    assert json.loads(open(path).read())["primary"] == "airflow-server2"
    assert [entry.name for entry in (tmp_path / "deep").iterdir()] == ["topology.json"]


def test_settings_merge_defaults_then_os_family_then_pillar():
    defaults = {"webserver": {"port": 8080, "workers": 2}, "python": "/usr/bin/python3"}
    os_family = {"python": "/usr/bin/python3.11"}
    pillar = {"airflow": {"webserver": {"workers": 4}}}
    assert component_settings("airflow", defaults, os_family, pillar) == {
        "webserver": {"port": 8080, "workers": 4}, "python": "/usr/bin/python3.11"}


def test_a_pillar_setting_part_of_a_mapping_keeps_the_rest_of_it():
    settings = component_settings("airflow", {"webserver": {"port": 8080, "workers": 2}}, {},
                                  {"airflow": {"webserver": {"workers": 4}}})
    assert settings["webserver"] == {"port": 8080, "workers": 4}


@pytest.mark.parametrize("version, health_url", [
    ("2.10.5", "http://10.11.12.10:8080/health"),
    ("3.3.2", "http://10.11.12.10:8080/api/v2/monitor/health"),
])
def test_the_release_line_of_the_version_chooses_the_health_endpoint(version, health_url):
    settings = airflow_settings(version)
    assert settings["release_line"] == int(version[0])
    assert Cluster(LAB).webserver_health_url("airflow-server1", settings) == health_url


def test_the_pillar_overrides_a_release_lines_value():
    assert airflow_settings("3.3.2", {"health_path": "/custom"})["health_path"] == "/custom"


def test_a_version_of_no_known_release_line_is_refused_with_the_supported_ones():
    with pytest.raises(InvalidInput, match=r"airflow:version 4.0.0: no release line 4.*2, 3"):
        airflow_settings("4.0.0")


@pytest.mark.parametrize("version, role, on_primary, units", [
    ("2.10.5", "airflow-webserver", True, ["airflow-webserver"]),
    ("2.10.5", "airflow-scheduler", False, ["airflow-scheduler"]),
    ("3.3.2", "airflow-webserver", False, ["airflow-api-server"]),
    ("3.3.2", "airflow-scheduler", True, ["airflow-scheduler", "airflow-dag-processor"]),
    ("3.3.2", "airflow-scheduler", False, ["airflow-scheduler"]),
    ("3.3.2", "airflow-worker", False, ["airflow-worker"]),
    ("3.3.2", "haproxy", True, []),
])
def test_the_dag_processor_runs_only_where_the_primaries_are(version, role, on_primary, units):
    assert airflow_units(airflow_settings(version), role, on_primary) == units


def test_merge_does_not_change_its_arguments():
    base, override = {"a": {"b": 1}}, {"a": {"c": 2}}
    assert merge(base, override) == {"a": {"b": 1, "c": 2}}
    assert base == {"a": {"b": 1}} and override == {"a": {"c": 2}}


def test_a_new_record_is_one_generation_past_every_known_one():
    from ha_core.cluster import generation
    assert generation(None) == 0 and generation({"primary": "a"}) == 0
    record = new_record("airflow-server2", "airflow-server1", "r",
                        [None, {"generation": 3}, {"generation": 1}])
    assert record["generation"] == 4
    assert new_record("airflow-server1", None, "r")["generation"] == 1


def test_a_record_file_is_the_same_text_as_salts_json_filter_writes():
    import salt.utils.json
    from ha_core.cluster import record_text
    record = new_record("airflow-server2", "airflow-server1", "orch.failover (planned) é")
    assert record_text(record) == salt.utils.json.dumps(record, sort_keys=True) + "\n"

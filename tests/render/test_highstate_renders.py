"""Every node of every pillar environment renders its highstate, on each
OS family the states support, through Salt's own loader (pytest-salt-factories)
with that node's id and pillar, as its minion would."""

import base64
import json
import re
import shutil
import subprocess

import jinja2
import pytest
import yaml
from salt.exceptions import CommandExecutionError

from ha_core.cluster import Cluster
from tests.conftest import REPO
from tests.render.conftest import PILLAR
from tests.topology_cases import PRIMARY_CASES

ENVIRONMENTS = sorted(path.name for path in PILLAR.iterdir() if (path / "init.sls").exists())
OS_FAMILIES = {
    "Debian": {"packages": "procps", "nologin": "/usr/sbin/nologin"},
    "RedHat": {"packages": "procps-ng", "nologin": "/sbin/nologin"},
}


LAB_PILLAR = yaml.safe_load((PILLAR / "lab" / "cluster.sls").read_text())
LAB_SECRETS = yaml.safe_load((PILLAR / "lab" / "secrets.sls").read_text())


def environment_nodes(environment):
    return yaml.safe_load((PILLAR / environment / "cluster.sls").read_text())["cluster"]["nodes"]


# The OS families each environment runs on: production pins PostgreSQL 14,
# the seed's RedHat-family target, which Debian 12 does not ship.
ENVIRONMENT_OS_FAMILIES = {"lab": ["Debian", "RedHat"], "production": ["RedHat"]}
NODES = [(env, node, os_family) for env in ENVIRONMENTS for node in environment_nodes(env)
         for os_family in ENVIRONMENT_OS_FAMILIES[env]]


def filled_in(pillar_root, environment):
    """A copy of the pillar tree whose example secrets (CHANGE-ME) an operator
    has filled in, as the validation requires."""
    shutil.copytree(PILLAR, pillar_root)
    secrets = pillar_root / environment / "secrets.sls"
    lab = yaml.safe_load((PILLAR / "lab" / "secrets.sls").read_text())
    lab_tls = dict(lab["haproxy"]["tls"], ca_certificate=lab["pgbackrest"]["tls"]["ca_certificate"])
    text = secrets.read_text().replace(
        "fernet_key: CHANGE-ME",
        "fernet_key: " + base64.urlsafe_b64encode(b"k" * 32).decode())
    for key in ("certificate", "key", "ca_certificate"):
        # The whole key name: webserver_secret_key ends with "key" too.
        text = re.sub(rf"(?m)^(\s+){key}: CHANGE-ME$",
                      lambda match, key=key: f"{match.group(1)}{key}: {json.dumps(lab_tls[key])}",
                      text)
    secrets.write_text(text.replace("CHANGE-ME", "filled-in-secret"))
    return pillar_root


def lab_on_airflow(pillar_root, version, venv=None, **pillar):
    """A copy of the pillar tree whose lab runs Airflow ``version`` (and
    has its virtual environment at ``venv``), with further ``pillar``
    keys: in the lab's local settings (pillar/lab/local.sls)."""
    shutil.copytree(PILLAR, pillar_root, ignore=shutil.ignore_patterns("local.sls"))
    settings = {"version": version, **({"venv": str(venv)} if venv else {})}
    (pillar_root / "lab" / "local.sls").write_text(yaml.safe_dump({"airflow": settings, **pillar}))
    return pillar_root


@pytest.fixture(scope="module")
def pillar_roots(tmp_path_factory):
    """The pillar tree to render each environment with; lab-2 is the lab on
    Airflow 2.10.5, the release an upgrade starts from."""
    production = filled_in(tmp_path_factory.mktemp("pillar") / "pillar", "production")
    lab_2 = lab_on_airflow(tmp_path_factory.mktemp("pillar-2") / "pillar", "2.10.5")
    return {"lab": PILLAR, "production": production, "lab-2": lab_2}


def test_both_environments_exist():
    assert set(ENVIRONMENTS) == set(ENVIRONMENT_OS_FAMILIES)


@pytest.mark.parametrize("environment,node,os_family", NODES)
def test_node_highstate_renders(render, pillar_roots, environment, node, os_family):
    highstate = render(environment, node, os_family, pillar_roots[environment])
    assert isinstance(highstate, dict), f"render errors: {highstate}"
    assert {state["__sls__"] for state in highstate.values()} >= {
        "common.hosts", "common.packages", "common.accounts"
    }
    # Every node of the environment resolves on this node, at its address.
    for other, data in environment_nodes(environment).items():
        host = dict(kv for item in highstate[f"common-hosts-{other}"]["host"]
                    if isinstance(item, dict) for kv in item.items())
        assert host["ip"] == data["address"]
    expected = OS_FAMILIES[os_family]
    packages = next(item["pkgs"] for item in highstate["common-packages"]["pkg"]
                    if isinstance(item, dict) and "pkgs" in item)
    assert expected["packages"] in packages
    user = dict(kv for item in highstate["common-account-airflow"]["user"]
                if isinstance(item, dict) for kv in item.items())
    assert user["shell"] == expected["nologin"]


def test_missing_environment_fails_naming_the_setting(render):
    with pytest.raises(CommandExecutionError) as failure:
        render("", "airflow-server1", "Debian")
    assert "airflow_environment is not set in the master configuration" in str(failure.value.info)


def state_args(highstate, state_id, function):
    """The arguments of one state of a rendered highstate, as a dict."""
    return dict(kv for item in highstate[state_id][function]
                if isinstance(item, dict) for kv in item.items())


@pytest.mark.parametrize("environment,os_family,bin_dir", [
    ("lab", "Debian", "/usr/lib/postgresql/15/bin"),
    ("production", "RedHat", "/usr/pgsql-14/bin"),
])
def test_database_roles_follow_the_primary(render, pillar_roots, environment, os_family, bin_dir):
    primary = render(environment, "airflow-server1", os_family, pillar_roots[environment])
    standby = render(environment, "airflow-server2", os_family, pillar_roots[environment])
    assert "postgresql-airflow-database" in primary and "postgresql-standby" not in primary
    assert "postgresql-standby" in standby and "postgresql-airflow-database" not in standby
    assert state_args(standby, "postgresql-standby", "pg_replication")["primary"] == "airflow-server1"
    assert state_args(primary, "postgresql-module-settings", "grains")["value"]["bin_dir"] == bin_dir
    # The Redis replica starts out following the master's address.
    redis_main = state_args(standby, "redis-initial-role", "file")
    assert redis_main["context"]["master_address"] == "10.11.12.10"
    assert state_args(primary, "redis-initial-role", "file")["context"]["master_address"] == ""


def test_the_topology_record_moves_every_role_that_follows_the_primary(render):
    record = {"primary": "airflow-server2", "previous_primary": "airflow-server1",
              "recorded_at": "2026-11-25T10:16:01+00:00", "reason": "orch.failover"}
    new_primary = render("lab", "airflow-server2", "Debian", topology=record)
    old_primary = render("lab", "airflow-server1", "Debian", topology=record)
    worker = render("lab", "airflow-worker1", "Debian", topology=record)
    assert "postgresql-airflow-database" in new_primary and "postgresql-standby" not in new_primary
    assert state_args(old_primary, "postgresql-standby", "pg_replication")["primary"] == "airflow-server2"
    assert state_args(old_primary, "postgresql-standby",
                      "pg_replication")["primary_address"] == "10.11.12.20"
    assert state_args(old_primary, "redis-initial-role", "file")["context"]["master_address"] == "10.11.12.20"

    # Airflow's configuration names no primary: the record changes none of it,
    # so a failover restarts nothing.
    def airflow_config(highstate):
        return state_args(highstate, "airflow-config", "file")["context"]["airflow"]

    airflow = airflow_config(worker)
    assert airflow == airflow_config(render("lab", "airflow-worker1", "Debian"))
    for key in ("broker_url", "sql_alchemy_conn", "result_backend"):
        assert airflow_config(old_primary)[key] == airflow[key] == airflow_config(new_primary)[key]
    # The broker: the balancer's frontend that follows the Redis master.
    assert airflow["broker_url"].endswith("@10.11.12.5:6380/0")
    # Every database node, the preferred primary first, each with its port
    # (SQLAlchemy 2 refuses fewer ports than hosts); libpq takes the writable one.
    assert "?host=10.11.12.10,10.11.12.20&port=5432,5432&" in airflow["sql_alchemy_conn"]
    assert "target_session_attrs=read-write" in airflow["sql_alchemy_conn"]

    assert airflow["result_backend"] == "db+" + airflow["sql_alchemy_conn"]


@pytest.mark.parametrize("name, record, expected", PRIMARY_CASES, ids=[c[0] for c in PRIMARY_CASES])
def test_the_jinja_primary_rule_is_the_pythons(render, name, record, expected):
    """current_primary() in salt/settings.jinja against the same cases as
    ha_core.cluster.Cluster.primary (tests/unit/test_cluster.py)."""
    server = "airflow-server2"
    highstate = render("lab", server, "Debian", topology=record)
    master_address = state_args(highstate, "redis-initial-role", "file")["context"]["master_address"]
    assert master_address == ("" if expected == server else Cluster(LAB_PILLAR).address(expected))


def test_workers_and_load_balancers_get_no_data_tier(render):
    for node in ("airflow-worker1", "airflow-lb1"):
        sls = {state["__sls__"] for state in render("lab", node, "Debian").values()}
        assert not {s for s in sls if s.startswith(("postgresql", "redis"))}


def airflow_units(highstate):
    return sorted(state_id[len("airflow-"):-len("-unit")] for state_id in highstate
                  if state_id.startswith("airflow-") and state_id.endswith("-unit"))


def service_function(highstate, state_id):
    """running or dead: the function of a service state."""
    return next(item for item in highstate[state_id]["service"] if isinstance(item, str))


def test_airflow_components_follow_the_roles(render):
    server1 = render("lab", "airflow-server1", "Debian")
    server2 = render("lab", "airflow-server2", "Debian")
    worker = render("lab", "airflow-worker1", "Debian")
    balancer = render("lab", "airflow-lb1", "Debian")
    # Airflow 3: the API server, the schedulers, and one DAG processor, which
    # runs where the primaries are and is installed, stopped, on the other.
    assert airflow_units(server1) == airflow_units(server2) == [
        "api-server", "dag-processor", "flower", "scheduler"]
    assert service_function(server1, "airflow-dag-processor") == "running"
    assert service_function(server2, "airflow-dag-processor") == "dead"
    assert service_function(server2, "airflow-scheduler") == "running"
    assert airflow_units(worker) == ["worker"]
    # Exactly one node migrates the database and keeps the users.
    assert "airflow-db-migrate" in server1 and "airflow-users" in server1
    assert "airflow-db-migrate" not in server2 and "airflow-db-migrate" not in worker
    assert not [s for s in balancer if s.startswith("airflow-")]
    assert "haproxy-config" in balancer and "haproxy-config" not in server1


def test_the_dag_processor_follows_the_topology_record(render):
    record = {"primary": "airflow-server2", "previous": "airflow-server1", "generation": 1}
    server1 = render("lab", "airflow-server1", "Debian", topology=record)
    server2 = render("lab", "airflow-server2", "Debian", topology=record)
    assert service_function(server1, "airflow-dag-processor") == "dead"
    assert service_function(server2, "airflow-dag-processor") == "running"


def test_airflow_2_runs_the_webserver_and_the_schedulers_dag_processor(render, pillar_roots):
    server = render("lab", "airflow-server1", "Debian", pillar_roots["lab-2"])
    worker = render("lab", "airflow-worker1", "Debian", pillar_roots["lab-2"])
    assert airflow_units(server) == ["flower", "scheduler", "webserver"]
    assert airflow_units(worker) == ["worker"]
    assert "-c /opt/airflow/constraints-2.10.5.txt 'apache-airflow[celery,postgres,redis,statsd]==2.10.5'" \
        in state_args(worker, "airflow-package", "cmd")["name"]


def test_a_highstate_does_not_move_a_node_to_another_release_line(render, tmp_path):
    # The node's layout: venv is a link to the version's own environment.
    (tmp_path / "venvs" / "2.10.5" / "lib" / "python3.11" / "site-packages" /
     "apache_airflow-2.10.5.dist-info").mkdir(parents=True)
    venv = tmp_path / "venv"
    venv.symlink_to(tmp_path / "venvs" / "2.10.5")
    on_3 = render("lab", "airflow-worker1", "Debian",
                  lab_on_airflow(tmp_path / "pillar-3", "3.3.2", venv))
    assert isinstance(on_3, list), "a highstate would move the node from Airflow 2 to 3"
    assert ("airflow:version is 3.3.2 (Airflow 3), but airflow-worker1 runs Airflow 2.10.5: "
            "a highstate does not move a cluster to another release line") in " ".join(on_3)
    on_2 = render("lab", "airflow-worker1", "Debian",
                  lab_on_airflow(tmp_path / "pillar-2", "2.10.5", venv))
    assert isinstance(on_2, dict), on_2


def test_the_upgrade_runbooks_move_a_node_to_the_other_line_and_retire_its_units(render,
                                                                                 tmp_path):
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.11" / "site-packages" / "apache_airflow-2.10.5.dist-info").mkdir(
        parents=True)
    server = render("lab", "airflow-server1", "Debian",
                    lab_on_airflow(tmp_path / "pillar-3", "3.3.2", venv, airflow_upgrade=True))
    assert isinstance(server, dict), server
    assert airflow_units(server) == ["api-server", "dag-processor", "flower", "scheduler"]
    # Airflow 2's webserver is stopped, disabled and its unit removed.
    assert service_function(server, "airflow-webserver-retired") == "dead"
    assert state_args(server, "airflow-webserver-retired", "file")["name"] == \
        "/etc/systemd/system/airflow-webserver.service"
    assert state_args(server, "airflow-venv-current", "file")["target"] == \
        "/opt/airflow/venvs/3.3.2"


def test_airflow_2_retires_the_units_of_airflow_3(render, pillar_roots):
    server = render("lab", "airflow-server1", "Debian", pillar_roots["lab-2"])
    assert service_function(server, "airflow-api-server-retired") == "dead"
    assert service_function(server, "airflow-dag-processor-retired") == "dead"
    assert state_args(server, "airflow-venv-current", "file")["target"] == \
        "/opt/airflow/venvs/2.10.5"


def test_airflow_installs_offline_in_the_lab_and_from_the_index_elsewhere(render, pillar_roots):
    lab = state_args(render("lab", "airflow-worker1", "Debian"), "airflow-package", "cmd")["name"]
    production = state_args(render("production", "airflow-worker1", "RedHat", pillar_roots["production"]),
                            "airflow-package", "cmd")["name"]
    assert "--no-index --find-links /opt/wheelhouse" in lab
    assert "--no-index" not in production
    for command in (lab, production):
        assert ("-c /opt/airflow/constraints-3.3.2.txt "
                "'apache-airflow[celery,postgres,redis,statsd,fab,standard]==3.3.2'") in command


def test_airflow_secrets_stay_out_of_change_output(render):
    server = render("lab", "airflow-server1", "Debian")
    config = state_args(server, "airflow-config", "file")
    assert config["mode"] == "0600" and config["show_changes"] is False
    users = state_args(server, "airflow-users", "cmd")
    assert "lab-admin-71c3e9" not in users["name"]  # the password goes on stdin


def lab_pillar(pillar_root):
    """A copy of the lab's pillar tree, without this checkout's local.sls."""
    shutil.copytree(PILLAR, pillar_root, ignore=shutil.ignore_patterns("local.sls"))
    return pillar_root


def test_monitoring_follows_the_pillars_nodes(render, tmp_path):
    """A monitoring node scrapes every node of the pillar, each labelled
    with its minion id; every node runs the node exporter on its cluster
    address; the database servers' minions export their replication state
    on a schedule."""
    nodes = environment_nodes("lab")
    pillar = lab_pillar(tmp_path / "pillar")
    balancer = render("lab", "airflow-lb1", "Debian", pillar)
    assert isinstance(balancer, dict), balancer
    config = state_args(balancer, "monitoring-prometheus-config", "file")
    settings = config["context"]["monitoring"]
    assert settings["scrape_targets"]["node"] == {
        name: f"{node['address']}:9100" for name, node in nodes.items()}
    assert settings["scrape_targets"]["prometheus"] == {"airflow-lb1": "10.11.12.5:9090"}
    assert settings["scrape_targets"]["haproxy"] == {"airflow-lb1": "10.11.12.5:8405"}
    template = (REPO / "salt" / "monitoring" / "files" / "prometheus.yml.jinja").read_text()
    environment = jinja2.Environment()
    environment.filters["json"] = json.dumps  # as Salt's
    text = environment.from_string(template).render(
        salt={"pillar.get": lambda key: "lab"}, **config["context"])
    (tmp_path / "prometheus.yml").write_text(text)
    check = subprocess.run(["promtool", "check", "config", "--syntax-only", "prometheus.yml"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    scraped = {job["job_name"]: [(c["labels"].get("instance", c["labels"].get("probe")),
                                  c["targets"]) for c in job["static_configs"]]
               for job in yaml.safe_load(text)["scrape_configs"]}
    assert scraped["node"] == [(name, [f"{nodes[name]['address']}:9100"]) for name in sorted(nodes)]
    assert scraped["blackbox"] == [
        ("airflow-ui", ["https://10.11.12.5:443/api/v2/monitor/health"]),
        ("flower", ["http://10.11.12.5:5555/healthcheck"])]
    rules = state_args(balancer, "monitoring-alert-rules", "file")["context"]
    assert rules["expected"] == {"airflow-scheduler": 2, "airflow-worker": 1}
    receivers = yaml.safe_load(state_args(balancer, "monitoring-alertmanager-config",
                                          "file")["contents"])["receivers"]
    assert receivers[0]["webhook_configs"][0]["url"] == "http://10.11.12.1:9099/alerts"

    for name in nodes:
        highstate = balancer if name == "airflow-lb1" else render("lab", name, "Debian", pillar)
        arguments = state_args(highstate, "monitoring-node-exporter-arguments", "file")
        assert f"--web.listen-address={nodes[name]['address']}:9100 " in arguments["contents"]
        scheduled = "monitoring-replication-metrics" in highstate
        assert scheduled == ("postgresql" in nodes[name]["roles"]), name
        assert ("monitoring-prometheus-config" in highstate) == (name == "airflow-lb1")
    server = render("lab", "airflow-server2", "Debian", pillar)
    schedule = state_args(server, "monitoring-replication-metrics", "schedule")
    assert (schedule["function"], schedule["seconds"]) == ("ha_metrics.write", 15)
    # The database servers' exporters; the Redis password only in the
    # template, which reads the pillar, not among the state's arguments.
    assert "DATA_SOURCE_NAME=\"user=prometheus host=/var/run/postgresql port=5432 " in state_args(
        server, "monitoring-postgres-exporter-arguments", "file")["contents"]
    redis = state_args(server, "monitoring-redis-exporter-arguments", "file")
    assert (redis["mode"], redis["show_changes"]) == ("0640", False)
    assert LAB_SECRETS["redis"]["password"] not in json.dumps(redis)
    assert state_args(server, "postgresql-hba", "file")["context"]["monitoring_role"] == "prometheus"
    assert "postgresql-monitoring-role" in render("lab", "airflow-server1", "Debian", pillar)
    assert settings["scrape_targets"]["postgresql"] == {
        "airflow-server1": "10.11.12.10:9187", "airflow-server2": "10.11.12.20:9187"}
    # Airflow's StatsD metrics: every Airflow node sends them to the bridge
    # on the monitoring node, which names each series by its sender.
    assert state_args(server, "airflow-config", "file")["context"]["airflow"]["statsd"] == {
        "host": "10.11.12.5", "port": 9125}
    bridge = state_args(balancer, "monitoring-statsd-bridge-unit", "file")["context"]
    assert (bridge["statsd_address"], bridge["web_address"]) == ("10.11.12.5:9125",
                                                                 "10.11.12.5:9102")
    assert yaml.safe_load(state_args(balancer, "monitoring-statsd-node-names", "file")[
        "contents"]) == {node["address"]: name for name, node in nodes.items()}
    assert settings["scrape_targets"]["airflow"] == {"airflow-lb1": "10.11.12.5:9102"}
    # Flower's /metrics, with its basic authentication from a file.
    assert settings["scrape_targets"]["flower"] == {
        "airflow-server1": "10.11.12.10:5555", "airflow-server2": "10.11.12.20:5555"}
    flower_job = next(job for job in yaml.safe_load(text)["scrape_configs"]
                      if job["job_name"] == "flower")
    assert flower_job["basic_auth"] == {"username": "flower",
                                        "password_file": "/etc/prometheus/flower.password"}
    password = state_args(balancer, "monitoring-flower-password", "file")
    assert (password["mode"], password["show_changes"]) == ("0640", False)
    assert LAB_SECRETS["airflow"]["flower"]["password"] not in json.dumps(password)


def test_without_a_monitoring_node_no_node_runs_monitoring(render, tmp_path):
    pillar = lab_pillar(tmp_path / "pillar")
    cluster = pillar / "lab" / "cluster.sls"
    cluster.write_text(cluster.read_text().replace("roles: [haproxy, monitoring, backup]",
                                                   "roles: [haproxy, backup]"))
    for node in ("airflow-lb1", "airflow-server1"):
        highstate = render("lab", node, "Debian", pillar)
        assert isinstance(highstate, dict), highstate
        assert not [key for key in highstate if key.startswith("monitoring-")], node
        assert "postgresql-monitoring-role" not in highstate
    server = render("lab", "airflow-server1", "Debian", pillar)
    assert state_args(server, "airflow-config", "file")["context"]["airflow"]["statsd"] is None


def test_an_s3_repository_keeps_its_keys_and_the_tls_files_out_of_the_states_arguments(
        render, tmp_path):
    """With pgbackrest:repository:type s3, the backup node's configuration
    names the object store, its keys go to a file of their own that only
    pgBackRest's user reads, and whether the stanza exists is asked of
    pgBackRest, not of the node's disk; no state's arguments hold a key."""
    root = lab_pillar(tmp_path / "pillar")
    s3 = {"bucket": "airflow-backups", "endpoint": "s3.example.net", "region": "eu-1"}
    with open(root / "lab" / "local.sls", "w", encoding="utf-8") as local:
        yaml.safe_dump({"pgbackrest": {"repository": {"type": "s3", "s3": {
            **s3, "key": "s3-access-key-1", "key_secret": "s3-secret-key-2"}}}}, local)
    highstate = render("lab", "airflow-lb1", "Debian", root)
    assert isinstance(highstate, dict), highstate
    assert "s3-access-key-1" not in repr(highstate) and "s3-secret-key-2" not in repr(highstate)
    assert "BEGIN PRIVATE KEY" not in repr(state_args(highstate, "pgbackrest-config", "file"))
    keys = state_args(highstate, "pgbackrest-s3-keys", "file")
    assert (keys["name"], keys["mode"], keys["show_changes"]) == (
        "/etc/pgbackrest/conf.d/s3-keys.conf", "0640", False)
    context = state_args(highstate, "pgbackrest-config", "file")["context"]["pgbackrest"]
    assert context["repository"]["type"] == "s3" and context["repository"]["s3"] == dict(
        s3, uri_style="host", verify_tls=True)
    assert "--output=json info" in state_args(highstate, "pgbackrest-stanza", "cmd")["unless"]

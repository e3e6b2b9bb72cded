"""Bad pillar fails every node's highstate at render time, before any state
runs, with a message that names the key, the problem and the fix. Each case
starts from the lab's pillar with one mistake in it."""

import copy
import shutil

import pytest
import yaml

from tests.render.conftest import PILLAR

LAB = {name: yaml.safe_load((PILLAR / "lab" / f"{name}.sls").read_text())
       for name in ("cluster", "secrets", "settings")}


def break_pillar(tmp_path, mistake):
    """A pillar tree: the lab's, changed by mistake(cluster, secrets, settings)."""
    root = tmp_path / "pillar"
    shutil.copytree(PILLAR, root)
    data = copy.deepcopy(LAB)
    mistake(data["cluster"]["cluster"], data["secrets"], data["settings"])
    for name, content in data.items():
        (root / "lab" / f"{name}.sls").write_text(yaml.safe_dump(content))
    return root


def nodes(cluster):
    return cluster["nodes"]


CASES = {
    "unknown role": (
        lambda c, s, o: nodes(c)["airflow-worker1"]["roles"].append("databse"),
        "cluster:nodes:airflow-worker1:roles has the unknown role 'databse': known roles are airflow-flower"),
    "missing address": (
        lambda c, s, o: nodes(c)["airflow-server2"].pop("address"),
        "cluster:nodes:airflow-server2:address is missing"),
    "address that is not an IP": (
        lambda c, s, o: nodes(c)["airflow-server2"].update(address="server2.example"),
        "cluster:nodes:airflow-server2:address 'server2.example' is not an IPv4 or IPv6 address"),
    "duplicate address": (
        lambda c, s, o: nodes(c)["airflow-worker1"].update(address="10.11.12.20"),
        "cluster:nodes:airflow-worker1:address 10.11.12.20 is also the address of airflow-server2"),
    "two initial primaries": (
        lambda c, s, o: c.update(primary=["airflow-server1", "airflow-server2"]),
        "cluster:primary must name exactly one node"),
    "no initial primary": (
        lambda c, s, o: c.pop("primary"),
        "cluster:primary must name exactly one node"),
    "a standby without a primary": (
        lambda c, s, o: nodes(c)["airflow-server1"]["roles"].remove("postgresql"),
        "cluster:primary airflow-server1 has no postgresql role, so airflow-server2 would have no postgresql primary"),
    "a topology record naming a node that cannot be primary": (
        lambda c, s, o: o.update(topology={"primary": "airflow-worker1"}),
        "topology:primary names airflow-worker1, which is not a node with the postgresql and redis roles"),
    "a TLS key that is not PEM": (
        lambda c, s, o: s["haproxy"]["tls"].update(key="not-a-key"),
        "haproxy:tls:key is not a PEM private key"),
    "no TLS certificate": (
        lambda c, s, o: s["haproxy"]["tls"].pop("certificate"),
        "haproxy:tls:certificate is missing or empty"),
    "missing database password": (
        lambda c, s, o: s["postgresql"].pop("airflow_password"),
        "postgresql:airflow_password is missing or empty"),
    "empty Redis password": (
        lambda c, s, o: s["redis"].update(password=""),
        "redis:password is missing or empty"),
    "example secret left in": (
        lambda c, s, o: s["airflow"].update(webserver_secret_key="CHANGE-ME"),
        "airflow:webserver_secret_key is still the example's CHANGE-ME"),
    "a newline in a password": (
        lambda c, s, o: s["postgresql"].update(replication_password="first\nsecond"),
        "postgresql:replication_password holds a newline, a tab or another control character"),
    "a tab in a user's password": (
        lambda c, s, o: s["airflow"]["users"]["viewer"].update(password="tab\there"),
        "airflow:users:viewer:password holds a newline, a tab or another control character"),
    "a password YAML reads as a number": (
        lambda c, s, o: s["redis"].update(password=12345678),
        "redis:password is not a string (YAML read it as a number"),
    "a comma in Flower's password": (
        lambda c, s, o: s["airflow"]["flower"].update(password="one,two"),
        "airflow:flower:password holds a comma, which Flower reads as the end of one user:password pair"),
    "invalid Fernet key": (
        lambda c, s, o: s["airflow"].update(fernet_key="not-a-fernet-key"),
        "airflow:fernet_key is not a Fernet key"),
    "a bad key in a Fernet key list": (
        lambda c, s, o: s["airflow"].update(fernet_key=[s["airflow"]["fernet_key"], "not-a-key"]),
        "airflow:fernet_key:1 is not a Fernet key"),
    "an empty Fernet key list": (
        lambda c, s, o: s["airflow"].update(fernet_key=[]),
        "airflow:fernet_key is an empty list: give one key, or while rotating a list"),
    "the same Fernet key twice": (
        lambda c, s, o: s["airflow"].update(fernet_key=[s["airflow"]["fernet_key"]] * 2),
        "airflow:fernet_key lists the same key twice"),
    "Airflow version without constraints": (
        lambda c, s, o: o["airflow"].update(version="2.9.3"),
        "airflow:version 2.9.3 has no constraints file salt/airflow/files/constraints-2.9.3-py3.11.txt"),
    "Airflow 3 workers without a load balancer": (
        lambda c, s, o: nodes(c)["airflow-lb1"]["roles"].remove("haproxy"),
        "airflow:version 3.3.2 runs tasks through the execution API, which the workers reach "
        "through a load balancer: give a node the haproxy role in cluster:nodes, or set "
        "airflow:base_url and airflow:execution_api_url"),
    "backups set without a backup node": (
        lambda c, s, o: nodes(c)["airflow-lb1"]["roles"].remove("backup"),
        "pgbackrest is set in the pillar, but no node has the backup role"),
    "unsupported PostgreSQL version": (
        lambda c, s, o: o.update(postgresql={"version": 14}),
        "postgresql:version 14 is not supported on Debian: use one of 15"),
}


def assert_stopped(render, root, node, message, case):
    errors = render("lab", node, "Debian", root)
    assert isinstance(errors, list), f"{case}: {node} rendered a highstate"
    text = " ".join(errors)
    assert message in text, text
    assert "nothing was changed on any node" in text


# Each mistake on one node (a render takes seconds); that every node, whatever
# its roles, stops on the same mistake is the next test's.
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_pillar_stops_the_highstate_naming_the_key(render, tmp_path, case):
    mistake, message = CASES[case]
    assert_stopped(render, break_pillar(tmp_path, mistake), "airflow-server1", message, case)


def test_a_bad_pillar_stops_every_node(render, tmp_path):
    case = "backups set without a backup node"
    mistake, message = CASES[case]
    root = break_pillar(tmp_path, mistake)
    for node in ("airflow-lb1", "airflow-server2", "airflow-worker1"):
        assert_stopped(render, root, node, message, case)


def test_every_problem_is_reported_at_once(render, tmp_path):
    def two_mistakes(cluster, secrets, settings):
        nodes(cluster)["airflow-worker1"]["roles"] = ["bogus"]
        secrets["redis"]["password"] = ""

    text = " ".join(render("lab", "airflow-server1", "Debian", break_pillar(tmp_path, two_mistakes)))
    assert "has 2 problem(s)" in text
    assert "unknown role 'bogus'" in text and "redis:password is missing" in text


def test_secret_values_are_never_in_the_message(render, tmp_path):
    def bad_and_secret(cluster, secrets, settings):
        secrets["airflow"]["fernet_key"] = "s3cret-but-not-fernet"

    text = " ".join(render("lab", "airflow-server1", "Debian", break_pillar(tmp_path, bad_and_secret)))
    assert "airflow:fernet_key is not a Fernet key" in text
    assert "s3cret-but-not-fernet" not in text.split("Jinja error:")[-1].split("; line")[0]


def test_a_fernet_key_list_is_valid_while_rotating(render, tmp_path):
    new_key = "A" * 43 + "="

    def rotating(cluster, secrets, settings):
        secrets["airflow"]["fernet_key"] = [new_key, secrets["airflow"]["fernet_key"]]

    assert isinstance(render("lab", "airflow-server1", "Debian", break_pillar(tmp_path, rotating)), dict)


def _backup_roles(cluster, secrets, settings):
    nodes(cluster)["airflow-server2"]["roles"].append("backup")


def _backup_tls(cluster, secrets, settings):
    secrets["pgbackrest"]["tls"]["nodes"]["airflow-server2"].pop("key")
    secrets["pgbackrest"]["tls"]["nodes"]["airflow-lb1"].update(certificate="cert")


def _backup_settings(cluster, secrets, settings):
    settings["pgbackrest"] = {
        "schedule": {"full": None, "diff": "every night", "weekly": "Sun *-*-* 01:00:00"},
        "repository": {"retention_days": 0, "retention_diff": "a week", "compress_type": "rar"},
        "restore": {"port": 5432},
    }


def _backup_s3(cluster, secrets, settings):
    settings["pgbackrest"] = {"repository": {"type": "s3", "s3": {
        "bucket": "airflow-backups", "endpoint": "", "uri_style": "virtual"}}}
    secrets["pgbackrest"]["repository"] = {"s3": {"key": "CHANGE-ME"}}


# Each pillar holds several mistakes, all named in one message.
BACKUP_CASES = {
    "two backup nodes, one a database server": (_backup_roles, [
        "cluster:nodes gives the backup role to airflow-lb1, airflow-server2: give it to one "
        "node only",
        "cluster:nodes:airflow-server2:roles has both backup and postgresql: a repository on a "
        "database server is lost with it"]),
    "pgBackRest TLS files missing or not PEM": (_backup_tls, [
        "pgbackrest:tls:nodes:airflow-server2:key is missing or empty",
        "pgbackrest:tls:nodes:airflow-lb1:certificate is not a PEM certificate"]),
    "schedules and retention that make no sense": (_backup_settings, [
        "pgbackrest:schedule:full is empty: differential and incremental backups need full ones",
        'pgbackrest:schedule:diff "every night" is not a systemd calendar expression',
        "pgbackrest:schedule:weekly is not a backup type",
        "pgbackrest:repository:retention_days is 0: give a whole number of at least 1",
        'pgbackrest:repository:retention_diff is "a week": give a whole number of at least 1',
        'pgbackrest:repository:compress_type is "rar": use one of none, gz, bz2, lz4, zst',
        "pgbackrest:restore:port 5432 is PostgreSQL's own port"]),
    "an S3 repository without its endpoint, region and keys": (_backup_s3, [
        "pgbackrest:repository:s3:endpoint is empty",
        "pgbackrest:repository:s3:region is empty",
        'pgbackrest:repository:s3:uri_style is "virtual": use host (bucket.endpoint) or path',
        "pgbackrest:repository:s3:key is still the example's CHANGE-ME",
        "pgbackrest:repository:s3:key_secret is missing or empty"]),
}


@pytest.mark.parametrize("case", sorted(BACKUP_CASES))
def test_bad_backup_pillar_is_refused_naming_each_key(render, tmp_path, case):
    mistake, messages = BACKUP_CASES[case]
    errors = render("lab", "airflow-lb1", "Debian", break_pillar(tmp_path, mistake))
    assert isinstance(errors, list), f"{case}: a highstate rendered"
    text = " ".join(errors)
    for message in messages:
        assert message in text, text

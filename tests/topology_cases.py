"""Cases of the rule "which node is the primary now", shared by the unit
test of the Python rule (ha_core.cluster.Cluster.primary) and the render
test of the Jinja one (current_primary() in salt/settings.jinja), so that
the two cannot drift apart: (name, topology record or None, expected
primary) for the lab pillar, whose cluster:primary is airflow-server1."""

PREFERRED = "airflow-server1"

PRIMARY_CASES = [
    ("no record: the preferred primary", None, "airflow-server1"),
    ("a record naming the other server", {"primary": "airflow-server2"}, "airflow-server2"),
    ("a record naming the preferred primary", {"primary": "airflow-server1"}, "airflow-server1"),
    ("a record without a primary: the preferred one", {"reason": "manual"}, "airflow-server1"),
]

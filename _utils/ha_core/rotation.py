"""
The plan of ``orch/rotate.sls``: in what order the nodes take new secrets.

A new password must be accepted before anything uses it. PostgreSQL holds
one password per role, so the primary takes the new one first (existing
sessions, the standby's stream among them, stay connected); Redis accepts
the new password besides the old one on every node before any client has
it. Only then does every node's highstate hand the new secrets to the
clients (Airflow, the start guards, HAProxy), and the old Redis password is
retired last.
"""

import hashlib


def fernet_key_count(pillar):
    """How many Fernet keys the pillar lists (``airflow:fernet_key``: one
    key, or while rotating a list, the new key first)."""
    keys = (pillar.get("airflow") or {}).get("fernet_key")
    if isinstance(keys, (list, tuple)):
        return len(keys)
    return 1 if keys else 0


def token_key_fingerprint(pillar):
    """The fingerprint (SHA-256 hex of the value) of the JWT secret the
    pillar gives Airflow 3 (``[api_auth] jwt_secret``, itself a digest of
    ``airflow:webserver_secret_key``; salt/airflow/files/airflow.cfg.jinja),
    to compare with a node's without either side showing the secret."""
    key = (pillar.get("airflow") or {}).get("webserver_secret_key") or ""
    secret = hashlib.sha256(f"airflow jwt secret: {key}".encode()).hexdigest()
    return hashlib.sha256(secret.encode()).hexdigest()


def plan(cluster, answering, pg_states, refusal=None, drain_for=()):
    """
    Return the rotation's plan: ``primary``, the database nodes in the
    order they take the new passwords (``order``: the primary, then the
    others), ``down`` (nodes that did not answer: they take the new secrets
    from their highstate when their minion returns), ``fernet_keys`` (more
    than one: re-encrypt with the first), ``drain`` (whether the Celery
    workers finish their running tasks and stop first), and ``refused``
    (why it must not run, or None).

    Two secrets a running task cannot outlive: Airflow's database password
    (a task opens new database connections as it goes, with the password
    its process started with, and the role takes one password only), and on
    Airflow 3 the JWT secret (a task's calls to the execution API carry a
    token signed with the old one). When one changes (``drain_for`` names
    them), the workers are drained before anything takes it: running tasks
    finish, queued ones wait.
    """
    primary = cluster.primary
    result = {"primary": primary, "order": [], "down": sorted(set(cluster.nodes) - answering),
              "fernet_keys": fernet_key_count(cluster.pillar), "refused": refusal,
              "drain": bool(drain_for and cluster.with_role("airflow-worker")),
              "drain_for": list(drain_for)}
    if refusal:
        return result
    if cluster.database_nodes() and (pg_states.get(primary) or {}).get("role") != "primary":
        role = (pg_states.get(primary) or {}).get("role", "not answering")
        result["refused"] = (
            f"the recorded primary {primary} is {role}: a new password must reach the "
            "primary first. Fail over (salt-run state.orchestrate orch.failover) or bring "
            f"{primary} back, check salt-run airflow_ha.status, then rotate")
        return result
    result["order"] = [primary] + sorted(
        node for node in set(cluster.database_nodes()) & answering if node != primary)
    return result


def plan_lines(result):
    """The lines the rotation's pre-flight prints about its plan."""
    lines = []
    if result["down"]:
        lines.append(f"    not answering (they take the new secrets when their minion "
                     f"returns): {', '.join(result['down'])}")
    if result["refused"]:
        lines.append(f"    REFUSED: {result['refused']}")
        return lines
    if result["drain"]:
        lines.append(f"    {' and '.join(result['drain_for'])} change: the Celery workers finish "
                     "their running tasks and stop first (queued tasks wait)")
    if result["order"]:
        lines.append(f"    plan: PostgreSQL and Redis take the new passwords on "
                     f"{', then '.join(result['order'])}; then every node's highstate")
    else:
        lines.append("    plan: every node's highstate")
    if result["fernet_keys"] > 1:
        lines.append(f"    {result['fernet_keys']} Fernet keys: connections and variables are "
                     "re-encrypted with the first")
    lines.append("    then the old Redis passwords are retired")
    return lines

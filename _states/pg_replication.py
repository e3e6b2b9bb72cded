"""
Build a PostgreSQL streaming standby, once.

.. code-block:: yaml

    postgresql-standby:
      pg_replication.standby:
        - primary: airflow-server1
        - database: airflow

The data directory is replaced by a copy of the primary's (through
``pg_replication.rejoin``: base backup, or pg_rewind where it applies) only
when it is not already a standby of that primary. A healthy standby is never
touched, a primary holding the Airflow database is never overwritten, and a
fenced former primary is left for ``orch.failback`` to rejoin.
"""

from salt.exceptions import CommandExecutionError


def standby_action(status, primary, holds_database):
    """
    Decide what the standby state does with this node, from its
    ``pg_replication.status``: ``("keep", why)``, ``("build", why)`` or
    ``("refuse", why)``.
    """
    following = status.get("standby_of") or {}
    host, _, port = primary.partition(":")
    if following.get("host") == host and (not port or str(following.get("port")) == port):
        return "keep", f"already a standby of {primary}"
    if status.get("fenced"):
        return "refuse", (
            "this node was fenced after a failover; rejoin it with "
            "`salt-run state.orchestrate orch.failback`, not with a highstate"
        )
    if status.get("role") == "primary" and holds_database:
        return "refuse", (
            f"this node runs as a primary holding the Airflow database while the "
            f"pillar names {primary} as the primary; a highstate never overwrites "
            f"a primary: check which node is the primary (pg_replication.status on "
            f"both) and use orch.failover or orch.failback"
        )
    if following:
        where = following["host"] + (f":{following['port']}" if following.get("port") else "")
        return "build", f"follows {where}, not {primary}"
    return "build", "not a standby yet"


def standby(name, primary, database):
    """
    Make this node a streaming standby of ``primary`` unless it already is one.

    name
        The state's name (free text).
    primary
        The node the standby streams from: HOST or HOST:PORT (a cluster
        node name in the states).
    database
        The Airflow database: a primary that holds it is never overwritten.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    status = __salt__["pg_replication.status"]()
    holds_database = status["role"] == "primary" and __salt__["pg_replication.database_exists"](
        database
    )
    action, why = standby_action(status, primary, holds_database)
    if action == "keep":
        ret["comment"] = why
        return ret
    if action == "refuse":
        ret["result"] = False
        ret["comment"] = why
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would rebuild this node as a standby of {primary} ({why})"
        ret["changes"] = {"standby_of": primary}
        return ret
    try:
        __salt__["pg_replication.stop"]()
        result = __salt__["pg_replication.rejoin"](primary=primary)
    except CommandExecutionError as error:
        # The primary may still be coming up on a fresh environment: the
        # state's retry settings try again.
        ret["result"] = False
        ret["comment"] = f"could not build a standby of {primary}: {error}"
        return ret
    ret["changes"] = {
        "standby_of": primary,
        "method": result["method"],
        "seconds": result["seconds"],
    }
    ret["comment"] = f"built as a standby of {primary} by {result['method']} ({why})"
    return ret

"""
Build a PostgreSQL streaming standby, once.

.. code-block:: yaml

    postgresql-standby:
      pg_replication.standby:
        - primary: airflow-server1
        - primary_address: 10.11.12.10
        - database: airflow

The data directory is replaced by a copy of the primary's (through
``pg_replication.rejoin``: base backup, or pg_rewind where it applies) only
when it is not already a standby of that primary. A healthy standby is never
touched, a primary holding the Airflow database is never overwritten, and a
fenced former primary is left for ``orch.failback`` to rejoin.
"""

from salt.exceptions import CommandExecutionError

from ha_core import errors, pg_decisions


def standby(name, primary, database, primary_address=None):
    """
    Make this node a streaming standby of ``primary`` unless it already is one.

    name
        The state's name (free text).
    primary
        The node the standby streams from: its name (HOST or HOST:PORT).
    primary_address
        Its address, which a new standby is given (default: ``primary``); a
        standby that follows the node by name or by address is kept.
    database
        The Airflow database: a primary that holds it is never overwritten.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    status = __salt__["pg_replication.status"]()
    holds_database = status["role"] == "primary" and __salt__["pg_replication.database_exists"](
        database
    )
    try:
        action, why = pg_decisions.standby_action(status, primary, holds_database,
                                                  primary_address)
    except errors.InvalidInput as error:  # the primary is not an address
        action, why = "refuse", str(error)
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
        diverged = __salt__["pg_replication.divergence"](primary=primary_address or primary)
        if diverged["discarded_bytes"]:
            ret["result"] = False
            ret["comment"] = (
                f"this node holds {diverged['discarded_bytes']} bytes of WAL past where "
                f"{primary}'s history parts from it ({diverged['discarded_lsn_range']}): a "
                "highstate never discards them; rejoin it with `salt-run state.orchestrate "
                "orch.failback`, which shows the range and asks for consent")
            return ret
        __salt__["pg_replication.stop"]()
        result = __salt__["pg_replication.rejoin"](primary=primary_address or primary)
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

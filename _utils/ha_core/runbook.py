"""
The steps of the runbooks (``orch/failover.sls``, ``orch/failback.sls``):
each step's title, and what the operator does when it fails. The runner's
step functions act and verify; this is what they print. The README's
"When a step fails" table follows it row by row.
"""

# The order airflow_follow restarts Airflow in, after the new configuration:
# (role, whether to return before the unit has restarted). Each role's unit
# is named after it. Workers shut down warm (running tasks finish first), so
# the step does not wait for them; the webservers come last, one at a time.
RESTART_ORDER = (("airflow-scheduler", False), ("airflow-flower", False),
                 ("airflow-triggerer", False), ("airflow-worker", True))

STEPS = {
    "record_primary": (
        "record {node} as the primary",
        "write the record by hand: salt-run airflow_ha.record_primary {node} reason=manual, "
        "then check salt-run airflow_ha.status"),
    "stop_schedulers": (
        "stop the Airflow schedulers",
        "start them again where the primary is: salt -G 'roles:airflow-scheduler' "
        "service.start airflow-scheduler (or re-run the orchestration)"),
    "pg_shut_down_primary": (
        "shut down the PostgreSQL primary on {node} (final checkpoint) and fence it",
        "no node accepts writes now. Check {node} with salt {node} pg_replication.status. To "
        "make it the primary again, start its PostgreSQL (it comes up fenced, in recovery) and "
        "run salt {node} pg_replication.promote force=True, then salt-run "
        "airflow_ha.airflow_follow; or re-run the failover"),
    "pg_check_standby_caught_up": (
        "check that {standby} received every WAL record of {old_primary}",
        "{old_primary} is shut down and fenced, {standby} is still a standby: nothing is lost "
        "yet. Check replication with salt-run airflow_ha.status; to go back, start "
        "{old_primary} as the primary (see pg_replication.fence)"),
    "pg_promote": (
        "promote PostgreSQL on {node}",
        "check {node} with salt {node} pg_replication.status; if it is a primary now, continue "
        "with salt-run airflow_ha.record_primary {node} and re-run the orchestration's "
        "remaining steps; if it is still a standby, retry the failover"),
    "redis_switch": (
        "make Redis on {node} the master",
        "check both with salt 'airflow-server*' redis_replication.status; if the failover "
        "aborted, {old_master} is still the master and nothing was lost: retry the "
        "orchestration"),
    "airflow_follow": (
        "point Airflow at the new primaries and restart it",
        "the data tier has switched; apply the states again: salt '*' state.apply, then check "
        "salt-run airflow_ha.status"),
    "pg_rejoin": (
        "rejoin PostgreSQL on {node} as a standby of {primary}",
        "{primary} is the primary and serves Airflow; {node} stays fenced (it cannot start as "
        "a primary). Fix the cause shown above, then run salt-run state.orchestrate "
        "orch.failback pillar='{{\"switch_back\": false}}'"),
    "redis_follow": (
        "make Redis on {node} a replica of {master}",
        "{master} is the Redis master and serves Airflow; check {node} with salt {node} "
        "redis_replication.status and retry: salt {node} redis_replication.replicate_from "
        "ADDRESS-OF-{master}"),
    "fence_unreachable": (
        "fence {node}, the former primary",
        "keep {node} powered off until you can run orch.failback"),
    "verify": (
        "verify: one primary, one master, standbys streaming, Airflow healthy",
        "read salt-run airflow_ha.status; the README's operator section says what to do for "
        "each problem listed"),
}


def title(step, **names):
    """The step's title, with its nodes named."""
    return STEPS[step][0].format(**names)


def advice(step, **names):
    """What to do when the step fails, with its nodes named."""
    return STEPS[step][1].format(**names)

"""
The steps of the runbooks (``orch/failover.sls``, ``orch/failback.sls``,
``orch/rotate.sls``, ``orch/upgrade.sls``, ``orch/upgrade_rollback.sls``,
``orch/backup.sls``, ``orch/restore.sls``):
each step's title, what the operator does when it fails, and the checks of
what a step achieved, from what the nodes report. The runner's step
functions act, ask the nodes and call these; a check returns what it
verified, for the step's progress line, or raises OperationFailed. The
README's "When a step fails" table follows the catalogue row by row.
"""

from ha_core.errors import OperationFailed
from ha_core.failover import streams_from, switch_proves_no_loss

# The order airflow_resume starts Airflow's stopped units in: (role, whether
# to return before the unit has started). Each role's unit is named after
# it. A worker restarted (its configuration changed) shuts down warm:
# running tasks finish first, so the step does not wait for it.
START_ORDER = (("airflow-scheduler", False), ("airflow-flower", False),
               ("airflow-triggerer", False), ("airflow-worker", True),
               ("airflow-webserver", False))
# A unit started less than this long ago is still starting: Celery does not
# survive a stop then (it hangs until the unit's stop timeout).
START_UP_SECONDS = 30


def start_wait(process_age, configuration_age):
    """How long to wait before (re)starting a unit whose main process has
    run ``process_age`` seconds (None: it does not run), its configuration
    having changed ``configuration_age`` seconds ago: None to leave it alone
    (it runs since its configuration changed), 0 to (re)start it now, or
    what remains of its start-up time."""
    if process_age is None:
        return 0
    if process_age < configuration_age:
        return None
    return max(0, START_UP_SECONDS - process_age)

STEPS = {
    "record_primary": (
        "record {node} as the primary",
        "run the same runbook again: it resumes the switch and records {node}; or write the "
        "record by hand: salt-run airflow_ha.record_primary {node} reason=manual, then check "
        "salt-run airflow_ha.status"),
    "ask_schedulers_to_stop": (
        "ask the Airflow schedulers to stop (they are stopped before anything is promoted)",
        "nothing has changed in the data tier; start them again where the primary is: salt -G "
        "'roles:airflow-scheduler' service.start airflow-scheduler (or re-run the orchestration)"),
    "stop_schedulers": (
        "stop the Airflow schedulers",
        "start them again where the primary is: salt -G 'roles:airflow-scheduler' "
        "service.start airflow-scheduler (or re-run the orchestration)"),
    "pg_shut_down_primary": (
        "shut down the PostgreSQL primary on {node} (final checkpoint) and fence it",
        "no node accepts writes now. Check {node} with salt {node} pg_replication.status. To "
        "make it the primary again, start its PostgreSQL (it comes up fenced, in recovery) and "
        "run salt {node} pg_replication.promote force=True, then salt-run "
        "airflow_ha.airflow_resume; or re-run the failover"),
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
    "airflow_resume": (
        "start the Airflow schedulers again, Airflow healthy through the load balancer",
        "the data tier has switched and is recorded, and Airflow's connections follow it by "
        "themselves; run the same runbook again: it finishes (the schedulers start, the old "
        "primary rejoins); or salt -G 'roles:airflow-scheduler' service.start "
        "airflow-scheduler, then check salt-run airflow_ha.status"),
    "pg_rejoin": (
        "rejoin PostgreSQL on {node} as a standby of {primary}",
        "{primary} is the primary and serves Airflow; {node} stays fenced (it cannot start as "
        "a primary). Fix the cause shown above, then run the same runbook again: it finishes "
        "with the rejoin"),
    "redis_follow": (
        "make Redis on {node} a replica of {master}",
        "{master} is the Redis master and serves Airflow; check {node} with salt {node} "
        "redis_replication.status and retry: salt {node} redis_replication.replicate_from "
        "ADDRESS-OF-{master}"),
    "fence_old_primary": (
        "fence {node}, the former primary, before anything is promoted",
        "nothing was promoted, and {node} may still take writes. Power it off (or stop its "
        "PostgreSQL and Redis), then run the failover again naming it: salt-run "
        "state.orchestrate orch.failover pillar='{{\"force\": true, \"fenced\": \"{node}\"}}'; "
        "or repair the fence agent (pillar failover:fence) and run the failover again"),
    "unfence": (
        "unfence {node}: let the rightful writer take writes",
        "read the reason above and salt-run airflow_ha.status; each node's copy of the "
        "topology record is in /var/lib/airflow-ha/topology.json"),
    "drain_workers": (
        "stop the Celery workers, once their running tasks finish",
        "nothing has changed yet but the workers that stopped; queued tasks wait. Start "
        "them again with salt -G 'roles:airflow-worker' service.start airflow-worker, or fix "
        "the cause shown above and run the same runbook again"),
    "secrets_accepted": (
        "PostgreSQL and Redis on {node} take the new passwords",
        "Redis still accepts the old password too; PostgreSQL on {node} may hold the new one "
        "already (sessions already open keep working). Fix the cause shown above "
        "(salt {node} state.apply postgresql,redis test=True shows what is left), then run "
        "the same runbook again: every step is safe to repeat"),
    "secrets_applied": (
        "every node takes the new secrets (highstate)",
        "some nodes may run with the old secrets still; Redis accepts both. Fix the cause "
        "shown above (salt NODE state.apply shows it on each node), then run the same "
        "runbook again: every step is safe to repeat"),
    "fernet_reencrypt": (
        "re-encrypt connections and variables with the new Fernet key",
        "every node runs with both keys, so everything stays readable; keep the old key in "
        "the pillar until this step has passed. Fix the cause shown above, then run the same "
        "runbook again"),
    "redis_retire_passwords": (
        "retire the old Redis passwords",
        "the old Redis password is still accepted where it was not retired. Run the same "
        "runbook again, or: salt -G 'roles:redis' redis_replication.retire_passwords"),
    "upgrade_check_dags": (
        "check the DAGs against Airflow 3 (ruff's AIR3 rules)",
        "nothing has changed. Fix the DAGs it names (ruff check --select AIR3 --fix fixes most), "
        "then run the same runbook again"),
    "upgrade_install": (
        "install Airflow {version} beside the running version on every Airflow node, and check "
        "its configuration",
        "nothing has stopped: the running version still serves. Fix the cause shown above "
        "(salt NODE state.apply airflow.install pillar='{{\"airflow_upgrade\": true}}' shows "
        "it), then run the same runbook again"),
    "upgrade_backup": (
        "dump the Airflow database on {node} (what a rollback restores)",
        "nothing has stopped or changed. Fix the cause shown above (the space in "
        "/var/lib/postgresql?), then run the same runbook again"),
    "upgrade_stop": (
        "stop every Airflow process",
        "Airflow is down, or partly; nothing is migrated. Run the same runbook again to go on; "
        "to stay on the running version instead, set airflow:version back to it in the pillar "
        "and run salt '*' state.apply"),
    "upgrade_migrate": (
        "migrate the database to Airflow {version} from {node}",
        "Airflow is down and the database may be partly migrated. Fix the cause shown above "
        "and run the same runbook again (db migrate goes on from where it stopped), or roll "
        "back: set airflow:version to the version before and run salt-run state.orchestrate "
        "orch.upgrade_rollback (it restores the dump taken before)"),
    "upgrade_restore": (
        "restore the database on {node} from the dump taken before the upgrade",
        "Airflow is down and the database may be partly restored. Fix the cause shown above, "
        "then run the same runbook again: the restore starts over from the dump"),
    "upgrade_start": (
        "every node runs the pillar's Airflow version (highstate)",
        "the database matches the pillar's version; some nodes may not run it yet. Fix the "
        "cause shown above (salt NODE state.apply pillar='{{\"airflow_upgrade\": true}}' "
        "shows it), then run the same runbook again"),
    "verify": (
        "verify: one primary, one master, standbys streaming, Airflow healthy",
        "read salt-run airflow_ha.status; the README's operator section says what to do for "
        "each problem listed"),
    "backup": (
        "take a backup ({type}) on {node}, then check the archive",
        "the backups taken before are intact; see `journalctl -u airflow-backup@{type}` and "
        "/var/log/pgbackrest on {node}, fix the cause shown above and run orch.backup again"),
    "restore": (
        "restore to {target} into a scratch directory on {node}",
        "the running pair is untouched. Fix the cause shown above (see /var/log/pgbackrest "
        "on {node}); remove a partial copy with salt {node} pg_backup.drop_restored "
        "DIRECTORY, then run orch.restore again"),
    "pg_stop": (
        "stop PostgreSQL on {nodes}",
        "nothing was restored. Fix the cause shown above (salt NODE pg_replication.status "
        "shows each server), then run orch.disaster_recovery again"),
    "pg_restore_primary": (
        "restore PostgreSQL on {node} from the repository ({target}), the primary again",
        "PostgreSQL on {node} is stopped or recovering; what its data directory held before is "
        "kept beside it (<data_dir>.before-restore-<time>). Fix the cause shown above (see "
        "/var/log/pgbackrest and PostgreSQL's log on {node}), stop PostgreSQL there, then run "
        "orch.disaster_recovery again"),
}


def title(step, **names):
    """The step's title, with its nodes named."""
    return STEPS[step][0].format(**names)


def advice(step, **names):
    """What to do when the step fails, with its nodes named."""
    return STEPS[step][1].format(**names)


# --- Checks of what a step achieved -------------------------------------------------


def shut_down(node, state):
    """The primary on ``node`` is down, cleanly shut down: its last checkpoint."""
    if state["running"] or state["cluster_state"] != "shut down":
        raise OperationFailed(f"PostgreSQL on {node} is {state['cluster_state']} "
                              f"(running: {state['running']}), not cleanly shut down")
    return {"checkpoint": state["last_checkpoint_lsn"], "fenced": state["fenced"]}


def promoted(node, old_primary, checkpoint, promotion, state):
    """``node`` is a primary now; when ``checkpoint`` (the old primary's
    shutdown checkpoint) is given, its new timeline begins after it."""
    if checkpoint is not None and not switch_proves_no_loss(checkpoint, promotion["switch_lsn"]):
        raise OperationFailed(
            f"the new timeline {promotion['timeline']} begins at {promotion['switch_lsn']}, "
            f"not after {old_primary}'s checkpoint {checkpoint}")
    if state["role"] != "primary":
        raise OperationFailed(f"{node} is {state['role']} after its promotion")
    verified = {"timeline": promotion["timeline"], "switch": promotion["switch_lsn"],
                "writable after": f"{promotion['seconds']} s"}
    if checkpoint is not None:
        verified["old checkpoint"] = checkpoint
    return verified


def already_promoted(node, old_primary, divergence):
    """An earlier run promoted ``node``: ``old_primary`` (its
    ``divergence`` from ``node``) must hold nothing past the fork."""
    if divergence["discarded_bytes"]:
        raise OperationFailed(
            f"{node} was promoted by an earlier run, but {old_primary} holds "
            f"{divergence['discarded_bytes']} bytes past the fork "
            f"({divergence['discarded_lsn_range']}) that {node} lacks")
    return {"already": f"promoted past everything {old_primary} holds "
                       f"(fork {divergence['fork_lsn']})"}


def redis_promoted(node, promotion, state):
    """Redis on ``node`` is the master after its promotion."""
    if state["role"] != "master":
        raise OperationFailed(f"Redis on {node} is {state['role']} after its promotion")
    return {"method": promotion["method"], "offset": promotion["offset"]}


def redis_old_master_follows(old_master, node, saved, state):
    """The old master is a replica with its link up, its role saved."""
    if state["role"] != "replica" or state["master_link_status"] != "up":
        raise OperationFailed(f"Redis on {old_master} is {state['role']} with link "
                              f"{state.get('master_link_status')}, not a replica of {node}")
    return {"old master": f"replica ({saved['role']} saved)"}


def redis_follows(node, master, followed):
    """Redis on ``node`` follows ``master`` with its link up."""
    if followed["role"] != "replica" or followed["master_link_status"] != "up":
        raise OperationFailed(f"Redis on {node} does not follow {master} with its link up")
    return {"replica of": master, "changed": followed["changed"]}


def state_applied(sls, nodes, replies):
    """Every node's run of the state ``sls`` (``{node: state results}``)
    rendered and succeeded."""
    for node in nodes:
        reply = replies.get(node)
        if not isinstance(reply, dict):
            raise OperationFailed(f"{sls} on {node}: {reply}")
        failed = [result.get("comment") for result in reply.values()
                  if result.get("result") is False]
        if failed:
            raise OperationFailed(f"{sls} on {node} failed: {failed}")


def rejoined(node, primary, rejoin, state, primary_state):
    """``node`` streams from ``primary`` after ``pg_replication.rejoin``."""
    if not streams_from(node, state, primary_state):
        raise OperationFailed(f"{node} does not stream from {primary} after its rejoin")
    verified = {"method": rejoin["method"], "rejoin": f"{rejoin['seconds']} s",
                "timeline": rejoin["timeline"]}
    if rejoin.get("discarded_bytes"):
        verified["discarded"] = (f"{rejoin['discarded_lsn_range']} "
                                 f"({rejoin['discarded_bytes']} bytes), kept in {rejoin['kept']}")
    if "rewind_error" in rejoin:
        verified["rewind failed"] = rejoin["rewind_error"]
    return verified

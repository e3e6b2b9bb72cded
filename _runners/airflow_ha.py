"""
Operate the highly available Airflow platform from the master: its status,
the topology record, and the steps of the failover, failback, secret
rotation and upgrade runbooks (``orch/failover.sls``, ``orch/failback.sls``,
``orch/rotate.sls``, ``orch/upgrade.sls``, ``orch/upgrade_rollback.sls``).

Every step acts through the data-tier execution modules on the nodes
(``pg_replication``, ``redis_replication``) and Salt's own modules, checks
what it achieved before it returns, prints its progress as it goes, and on
failure returns ``{"Error": ...}`` (which stops an orchestration) saying
where the cluster stands and what the operator can do next.

The decisions, checks and texts are the core's (``_utils/ha_core``); the
nodes are asked through ``_utils/ha_nodes.py``; this runner acts and
prints. The topology record names the node that is the PostgreSQL primary
and the Redis master now: a JSON file on the master, at the path of the
master option ``airflow_topology_record``, which ``pillar/topology.sls``
serves as the pillar key ``topology``; the states take the primary from it
(``salt/settings.jinja``), so a highstate keeps what a failover did.
Without a record, the primary is ``cluster:primary``.

CLI Example:

.. code-block:: bash

    salt-run airflow_ha.status
    salt-run airflow_ha.status --out=json
    salt-run state.orchestrate orch.failover
"""

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time

import ha_nodes
from ha_core import backups, errors, failover, probes, report, rotation, runbook, upgrade
from ha_core.cluster import (Cluster, airflow_units, new_record, read_record, record_path,
                             record_text, write_record)

log = logging.getLogger(__name__)

# Long operations: a base backup, a warm shutdown, a state run.
_LONG_SECONDS = 600

# --- Talking to the master and the nodes -----------------------------------------


def _say(message):
    """Progress for the operator, as it happens (orchestrations print their
    results only at the end)."""
    print(message, file=sys.stderr, flush=True)
    log.info("airflow_ha: %s", message)


def _nodes():
    return ha_nodes.Nodes(__opts__)


def _answering(nodes, down=None):
    return _nodes().answering(nodes, down)


def _call(node, function, *args, **kwargs):
    return _nodes().call(node, function, *args, **kwargs)


def _pillar():
    """The environment's pillar as the master renders it (no node needed)."""
    return __salt__["pillar.show_pillar"]()


def _settings(cluster, component, node):
    """A component's settings for ``node``, its OS family from the master's
    grains cache."""
    os_family = (__salt__["cache.grains"](tgt=node).get(node) or {}).get("os_family")
    return ha_nodes.settings(__opts__, cluster.pillar, component, os_family)


def _cluster():
    return Cluster(_pillar())


def _health_url(cluster):
    balancers = cluster.with_role("haproxy")
    if not balancers:
        return None
    return cluster.health_url(_settings(cluster, "haproxy", balancers[0]),
                              _settings(cluster, "airflow", balancers[0]))


def _monitoring_urls(cluster):
    servers = cluster.with_role("monitoring")
    if not servers:
        return None
    return cluster.monitoring_urls(_settings(cluster, "monitoring", servers[0]))


def _units(cluster, node, role):
    """The units of ``role`` that run on ``node``, and those of its single
    components (Airflow 3's DAG processor) that run elsewhere: where the
    recorded primary is."""
    settings = _settings(cluster, "airflow", node)
    every = airflow_units(settings, role, on_primary=True)
    here = airflow_units(settings, role, on_primary=node == cluster.primary)
    return here, [unit for unit in every if unit not in here]


def _step(step, action, **names):
    """
    Run one runbook step: print its title, run action() (which returns a
    dict of what it verified), print the outcome. On failure, return the
    error with where the cluster stands and what to do next, and with a
    ``retcode`` that ``salt-run`` exits with (it exits 0 otherwise, even
    when a step run on its own fails).
    """
    title = runbook.title(step, **names)
    _say(f"==> {title}")
    started = time.monotonic()
    try:
        verified = action()
    except errors.HaError as error:
        _say(f"    FAILED: {error}")
        __context__["retcode"] = 1
        return {"Error": f"{title}: {error}",
                "cluster now": _brief_status(),
                "what to do next": runbook.advice(step, **names),
                "retcode": 1}
    verified["seconds"] = round(time.monotonic() - started, 1)
    _say(f"    done in {verified['seconds']} s: "
         + ", ".join(f"{key} {value}" for key, value in verified.items() if key != "seconds"))
    return verified


def _brief_status():
    try:
        return status(as_text=True)
    except Exception as error:  # pylint: disable=broad-except
        return f"could not be read: {error}"


# --- The topology record -----------------------------------------------------------


def topology():
    """
    Return the topology record: where it is and what it says (``record`` is
    None when no failover has happened: the primary is ``cluster:primary``).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.topology
    """
    path = record_path(__opts__)
    return {"path": path, "record": read_record(path), "preferred": _cluster().preferred}


def _record_copy_path(cluster, node):
    return _settings(cluster, "common", node)["topology_record_copy"]


def _record_copies(cluster, nodes):
    """``{node: its copy of the topology record, or None}`` of the nodes."""
    paths = {node: _record_copy_path(cluster, node) for node in nodes}
    exists = _nodes().call_each({node: ("file.file_exists", [path], {}) for node, path in paths.items()})
    texts = _nodes().call_each({node: ("file.read", [path], {}) for node, path in paths.items()
                                if exists[node]})
    return {node: json.loads(texts[node]) if node in texts else None for node in nodes}


def record_primary(node, reason, fenced=(), down=None):
    """
    Record ``node`` as the PostgreSQL primary and Redis master, one
    generation past the master's record and every node's copy, so that
    every later highstate keeps it; give every answering node but those in
    ``down`` its copy (the start guards go by it, the validation holds the
    master's record against it; a node that returns gets its copy from the
    reactor); check that the pillar now says so. ``fenced`` lists the nodes
    the run proved fenced: status and verify take them not answering as
    known.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.record_primary airflow-server2 reason='orch.failover (planned)'
    """
    def action():
        cluster = _cluster()
        if node not in cluster.database_nodes():
            raise errors.InvalidInput(f"{node} is not a database node of the pillar")
        return _write_record(cluster, node, cluster.primary, reason, fenced, down)

    return _step("record_primary", action, node=node)


def _write_record(cluster, node, previous_primary, reason, fenced, down=None):
    """Write the record naming ``node`` as the primary, a generation past
    every known one, give every answering node but those in ``down`` its
    copy and check that the pillar follows."""
    path = record_path(__opts__)
    answering = sorted(_answering(cluster.nodes, down))
    copies = _record_copies(cluster, answering)
    record = new_record(node, previous_primary, reason,
                        [read_record(path), *copies.values()], fenced=fenced)
    write_record(path, record)
    seen = _cluster().primary
    if seen != node:
        raise errors.OperationFailed(
            f"wrote {path}, but the pillar still names {seen} as the primary",
            fix="check that pillar/top.sls includes topology")
    runbook.state_applied("the record's copy", answering, _nodes().call_each({
        answering_node: ("state.single", ["file.managed"], {
            "name": _record_copy_path(cluster, answering_node), "contents": record_text(record),
            "makedirs": True, "mode": "0644"})
        for answering_node in answering}))
    return {"record": path, "primary": node, "generation": record["generation"],
            "copies on": ", ".join(answering) or "no answering node"}


def _forget_fenced(node):
    """The record stops listing ``node`` as fenced once it streams again:
    status and verify must then take its silence as a problem. Returns what
    changed ({} when the record did not list it)."""
    record = read_record(record_path(__opts__)) or {}
    if node not in record.get("fenced", ()):
        return {}
    written = _write_record(_cluster(), record["primary"], record.get("previous_primary"),
                            f"{node} rejoined as a standby, after {record.get('reason')}",
                            [fenced for fenced in record["fenced"] if fenced != node])
    return {"record": f"no longer lists {node} as fenced (generation {written['generation']})"}


# --- Status -------------------------------------------------------------------------


def status(as_text=None):
    """
    Show the cluster: each server's PostgreSQL role, timeline and lag, its
    Redis role and offset, the node the topology record names as primary,
    Airflow's health through the load balancer, with a monitoring node
    where Prometheus and Alertmanager are and the alerts firing now, and
    with a backup node the newest backup of each type, the WAL archive and
    their problems (a backup older than its schedule allows, WAL waiting to
    be archived). A text
    table, or data with ``--out=json`` (or ``as_text=False``).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.status
        salt-run airflow_ha.status --out=json
    """
    cluster = _cluster()
    pg_nodes, redis_nodes = cluster.database_nodes(), cluster.redis_nodes()
    answering = _answering(sorted(set(pg_nodes) | set(redis_nodes)))
    pg_states, redis_states = _nodes().data_tier_states(cluster, answering)
    report.add_standby_lag(pg_states)
    url = _health_url(cluster)
    path = record_path(__opts__)
    record = read_record(path)
    monitoring = _monitoring_urls(cluster)
    health = probes.airflow_health(url) if url else None
    backup_state = _backup_status(cluster, answering)
    data = {
        "nodes": {node: {"postgresql": pg_states.get(node), "redis": redis_states.get(node)}
                  for node in sorted(set(pg_nodes) | set(redis_nodes))},
        "primary": cluster.primary,
        "record": record,
        "record_path": path,
        "airflow_health_url": url,
        "airflow_health": health,
        "airflow_problems": failover.airflow_health_problems(health) if health else [],
        "monitoring": monitoring and dict(
            monitoring, alerts=probes.firing_alerts(monitoring["prometheus"])),
        "problems": failover.topology_problems(cluster.primary, pg_states, redis_states,
                                               set(pg_nodes) - answering,
                                               cluster.address(cluster.primary),
                                               (record or {}).get("fenced", ()))
                    + (backup_state["problems"] if backup_state else []),
        "backup": backup_state,
    }
    if as_text is None:
        as_text = __opts__.get("output") in (None, "nested", "txt", "highstate")
    return report.status_text(data, cluster.preferred) if as_text else data


# --- Pre-flight -----------------------------------------------------------------------


def _mined(node, function):
    """What the Salt mine last received of ``function`` from ``node``."""
    return __salt__["mine.get"](node, function, tgt_type="list").get(node) or {}


def _last_known_lsn(node):
    """The primary's WAL position the Salt mine last received from it."""
    mined = _mined(node, "pg_replication.status")
    if mined.get("role") == "primary":
        return mined.get("current_lsn"), mined.get("checked_at")
    return None, None


def _last_known_redis_offset(node):
    """The Redis master's replication offset the Salt mine last received."""
    mined = _mined(node, "redis_replication.status")
    return mined.get("master_repl_offset") if mined.get("role") == "master" else None


def plan(action="failover", force=False, switch_back=True, max_lag_bytes=None, discard=None,
         fenced=None, max_redis_lag_bytes=None):
    """
    Inspect both servers, decide what the orchestration ``action``
    (``failover`` or ``failback``) will do and print it. Changes nothing.
    Returns ``mode`` (planned, unplanned, rejoin-only, nothing), ``old`` and
    ``new`` (the primary before and after), ``rejoin`` (the node to rejoin
    as a standby first, or None), ``refused`` (why it must not run, or
    None), ``at_risk``, ``down`` (nodes that did not answer: the steps do
    not wait for them), the database nodes' states, and the Airflow nodes;
    for an unplanned failover, how the old primary is fenced first
    (``fence``; ``fenced`` names a node the operator powered off); for a
    failback that rejoins a node, its ``divergence`` and the range the
    rejoin would ``discard`` (refused unless ``discard`` names it).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.plan
        salt-run airflow_ha.plan action=failback
    """
    cluster = _cluster()
    _say(f"==> pre-flight ({action}): inspecting {', '.join(sorted(cluster.nodes))}")
    try:
        answering = _answering(cluster.nodes)
        result = _plan(cluster, answering, action, force, switch_back, max_lag_bytes, discard,
                       fenced, max_redis_lag_bytes)
    except errors.HaError as error:
        result = {"action": action, "old": cluster.primary, "new": None, "mode": None,
                  "refused": f"the pre-flight could not inspect the cluster: {error}",
                  "down": [], "states": {}}
    for line in report.plan_lines(result):
        _say(line)
    return result


def _wait_for_earlier_steps(cluster, answering, wait=_LONG_SECONDS):
    """Wait until no job of an earlier run's step still runs on an
    ``answering`` node: a run killed half-way leaves its step's job running
    there (a rejoin, a base backup), and nothing is inspected or changed
    beside it."""
    last = {}

    def idle():
        busy = _nodes().step_jobs(answering)
        if busy and busy != last:
            _say("    waiting for jobs an earlier run left running: " + "; ".join(
                f"{node} {', '.join(functions)}" for node, functions in sorted(busy.items())))
        last.clear()
        last.update(busy)
        return not busy

    probes.wait_until(idle, wait, "no job of an earlier run left on the nodes")


def _inspect(cluster, answering):
    """What a pre-flight learns from the ``answering`` nodes once no job of
    an earlier run is left on them: ``(refusal, pg_states, redis_states)``.
    The pillar validation, the Airflow release lines and the data tier's
    states are asked all at once; no state counts when the run is refused."""
    _wait_for_earlier_steps(cluster, answering)
    airflow = sorted(answering & set(cluster.airflow_nodes()))
    venv = _settings(cluster, "airflow", airflow[0])["venv"] if airflow else None
    validation, versions, pg_states, redis_states = _nodes().preflight(cluster, answering, venv)
    refusal = (failover.pillar_refusal(validation)
               or _release_line_refusal(cluster, versions))
    return (refusal, {}, {}) if refusal else (None, pg_states, redis_states)


def _plan(cluster, answering, action, force, switch_back, max_lag_bytes, discard, fenced,
          max_redis_lag_bytes):
    refusal, pg_states, redis_states = _inspect(cluster, answering)
    mined = action == "failover" and not refusal
    last_lsn, seen_at = _last_known_lsn(cluster.primary) if mined else (None, None)
    return failover.plan(cluster, action, answering, pg_states, force=force,
                         switch_back=switch_back, max_lag_bytes=max_lag_bytes,
                         last_primary_lsn=last_lsn, last_seen_at=seen_at, refusal=refusal,
                         redis_states=redis_states, discard=discard or None,
                         fenced=fenced or None, max_redis_lag_bytes=max_redis_lag_bytes,
                         last_redis_offset=(_last_known_redis_offset(cluster.primary)
                                            if mined else None),
                         divergence_of=lambda node, primary: _call(
                             node, "pg_replication.divergence", primary=cluster.address(primary)))


# --- Steps of the runbooks (titles and advice: ha_core.runbook) ----------------------


def stop_schedulers(down=None):
    """
    Stop the Airflow schedulers on every answering node but those in
    ``down``, so that nothing schedules while the primaries move.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.stop_schedulers
    """
    def action():
        return _stop_units("airflow-scheduler", down)

    return _step("stop_schedulers", action)


def ask_schedulers_to_stop(down=None):
    """
    Ask the Airflow schedulers on every answering node but those in ``down``
    to stop, without waiting: a forced failover fences the old primary
    while they stop (a scheduler waiting on a connection to a server that
    is off takes seconds to), and ``stop_schedulers`` checks that they
    stopped before anything is promoted.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.ask_schedulers_to_stop
    """
    def action():
        units = _role_units(_cluster(), "airflow-scheduler", down)
        _nodes().call_each({node: ("airflow_units.stop", [names], {"no_block": True})
                            for node, names in units.items()}, timeout=60)
        return {"stop requested": ", ".join(_unit_names(units)) or "no answering node"}

    return _step("ask_schedulers_to_stop", action)


def _stop_units(role, down, wait=120):
    """Stop the units of ``role`` (Airflow 3's DAG processor with the
    schedulers) on every answering node with that role but those in
    ``down``: see _stopped_units."""
    return {"stopped": ", ".join(_stopped_units(role, down, wait)) or "no answering node"}


def _stopped_units(role, down, wait, every_line=False):
    """Stop the units of ``role`` on every answering node with that role
    but those in ``down`` (with ``every_line``, those of every release line
    the node has), all nodes at once, each within ``wait`` seconds, and
    check that they are stopped; returns them as UNIT@NODE. A restart
    requested without waiting (the reactor's, for a node that has just
    returned) can cancel the stop, or come after it: stop again until
    every one is stopped."""
    units = _role_units(_cluster(), role, down, every_line)

    def stopped():
        states = _nodes().call_each(
            {node: ("airflow_units.stop", [names], {}) for node, names in units.items()}, wait)
        running = [f"{unit}@{node} {state}" for node, unit_states in states.items()
                   for unit, state in unit_states.items() if state not in ("inactive", "failed")]
        if running:
            _say(f"    still running: {', '.join(running)}: stopping again")
        return not running

    if units:
        probes.wait_until(stopped, wait, f"the {role} units stopped")
    return _unit_names(units)


def _role_units(cluster, role, down, every_line=False):
    """``{node: [unit, ...]}``: the units of ``role`` on every answering node
    with that role but those in ``down``, and with ``every_line``, those of
    every release line the node has."""
    units = {}
    for node in sorted(_answering(cluster.with_role(role), down)):
        if every_line:
            units[node] = [unit for unit in _every_line_units(role)
                           if _call(node, "service.available", unit)]
        else:
            units[node] = [unit for units in _units(cluster, node, role) for unit in units]
    return {node: names for node, names in units.items() if names}


def _unit_names(units):
    """``{node: [unit, ...]}`` as UNIT@NODE."""
    return [f"{unit}@{node}" for node, names in units.items() for unit in names]


def _every_line_units(role):
    """The units of ``role`` on any release line (salt/airflow/versionmap.yaml)."""
    return sorted({f"airflow-{component['name']}"
                   for values in ha_nodes.release_lines(__opts__).values()
                   for component in values["components"].get(role, ())})


def pg_shut_down_primary(node, reason):
    """
    Shut the PostgreSQL primary on ``node`` down cleanly (its final
    checkpoint and all WAL go to its standbys first) and fence it; check
    that it is cleanly shut down and report its last checkpoint.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_shut_down_primary airflow-server1 reason=switchover
    """
    def action():
        _call(node, "pg_replication.fence", reason=reason, timeout=_LONG_SECONDS)
        return runbook.shut_down(node, _call(node, "pg_replication.status"))

    return _step("pg_shut_down_primary", action, node=node)


def pg_check_standby_caught_up(standby, old_primary, wait=30):
    """
    Wait up to ``wait`` seconds until ``standby`` has received the stopped
    ``old_primary``'s WAL up to its shutdown checkpoint: then promoting it
    loses no committed transaction.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_check_standby_caught_up airflow-server2 airflow-server1
    """
    def action():
        states = _pg_states(standby, old_primary)
        if states[standby]["role"] == "primary":
            return _already_promoted(standby, old_primary)
        checkpoint = states[old_primary]["last_checkpoint_lsn"]

        def caught_up(state):
            received = state.get("received_lsn")
            return state if failover.received_everything(checkpoint, received) else None

        state = caught_up(states[standby]) or probes.wait_until(
            lambda: caught_up(_call(standby, "pg_replication.status")), wait,
            f"{standby} receiving WAL up to {checkpoint}")
        return {"old primary's checkpoint": checkpoint, "received": state["received_lsn"]}

    return _step("pg_check_standby_caught_up", action, old_primary=old_primary, standby=standby)


def _pg_states(*nodes):
    """``{node: pg_replication.status}`` of the nodes, asked at once."""
    return _nodes().call_each({node: ("pg_replication.status", [], {}) for node in nodes})


def _already_promoted(node, old_primary):
    """An earlier run promoted ``node``: check that ``old_primary`` holds
    nothing past the fork, so the switch lost nothing."""
    return runbook.already_promoted(node, old_primary, _call(
        old_primary, "pg_replication.divergence", primary=_cluster().address(node)))


def pg_promote(node, old_primary, planned=True):
    """
    Promote the standby on ``node`` and check that it accepts writes; when
    planned, also that its new timeline begins after ``old_primary``'s
    shutdown checkpoint (it replayed everything).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_promote airflow-server2 airflow-server1
    """
    def action():
        # Unplanned, the old primary is down or fenced: nothing to ask it.
        states = _pg_states(node, *([old_primary] if planned else []))
        state = states[node]
        if state["role"] == "primary":
            return (_already_promoted(node, old_primary) if planned
                    else {"already": f"primary, timeline {state['timeline']}"})
        checkpoint = states[old_primary]["last_checkpoint_lsn"] if planned else None
        promoted = _call(node, "pg_replication.promote", force=not planned, timeout=_LONG_SECONDS)
        return runbook.promoted(node, old_primary, checkpoint, promoted,
                                _call(node, "pg_replication.status"))

    return _step("pg_promote", action, node=node)


def redis_switch(node, old_master, planned=True, down=None):
    """
    Make Redis on ``node`` the master. Planned: FAILOVER on the old master,
    which waits until ``node`` has every write it acknowledged, then
    follows it and saves that role. Unplanned: ``node`` stops following;
    the old master, unless in ``down`` (the pre-flight found it down) or
    silent, follows ``node``. Either way the load balancers' broker
    frontend cuts its clients off the old master first (see
    _broker_drained).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.redis_switch airflow-server2 airflow-server1
    """
    def action():
        cluster = _cluster()
        if _call(node, "redis_replication.status")["role"] == "master":
            # An earlier run may have stopped with the old master drained.
            _set_broker_servers(cluster, [old_master, node], "ready", down)
            verified = {"already": "master"}
        else:
            with _broker_drained(cluster, old_master, node, down):
                promoted = _call(node, "redis_replication.promote", force=not planned,
                                 timeout=_LONG_SECONDS)
            verified = runbook.redis_promoted(node, promoted,
                                              _call(node, "redis_replication.status"))
        if planned or old_master in _answering([old_master], down):
            # A former master fenced by its minion comes back a replica of node.
            _call(old_master, "service.start", _settings(cluster, "redis", old_master)["service"])
            follows = probes.wait_until(
                lambda: _following(old_master, node, cluster), 60,
                f"Redis on {old_master} following {node}")
            verified.update(runbook.redis_old_master_follows(
                old_master, node, _call(old_master, "redis_replication.save_role"), follows))
        return verified

    return _step("redis_switch", action, node=node, old_master=old_master)


@contextlib.contextmanager
def _broker_drained(cluster, old_master, new_master, down):
    """
    While Redis' master moves from ``old_master`` to ``new_master``, the
    broker frontend of every load balancer but those in ``down`` sends no
    connection to the old master and has cut those it had. A Celery worker
    blocked on the old master would otherwise get an error as it turns
    replica (UNBLOCKED, or READONLY for a command that FAILOVER held back),
    which the worker does not survive; from a cut connection it reconnects,
    through the frontend, to the new master. Afterwards both servers are
    ready again, whatever happened: their health checks admit the master
    only.
    """
    try:
        _set_broker_servers(cluster, [old_master], "maint", down, cut_connections=True)
        yield
    finally:
        _set_broker_servers(cluster, [old_master, new_master], "ready", down)


def _set_broker_servers(cluster, servers, state, down, cut_connections=False):
    """Set the Redis ``servers`` of the broker frontend to ``state`` on every
    load balancer but those in ``down`` (haproxy_admin.set_server_state)."""
    calls = {}
    for balancer in sorted(set(cluster.with_role("haproxy")) - set(down or ())):
        settings = _settings(cluster, "haproxy", balancer)
        calls[balancer] = ("haproxy_admin.set_server_state", [
            settings["broker_backend"], servers, state, settings["admin_socket"]],
            {"cut_connections": cut_connections})
    _nodes().call_each(calls, timeout=30)


def _following(node, master, cluster):
    """Redis on ``node``'s status once it is a replica of ``master`` with
    its link up, else None."""
    try:
        state = _call(node, "redis_replication.status")
    except errors.HaError:
        return None  # still starting
    up = (state["role"] == "replica" and state.get("master_link_status") == "up"
          and state.get("master_host") == cluster.address(master))
    return state if up else None


def _resumed_units(cluster, nodes, wait, without_waiting=False):
    """Start Airflow's units on ``nodes`` where they belong, role by role in
    ``runbook.START_ORDER``, each role on every node at once
    (airflow_units.resume: stopped units start, the single ones only where
    the recorded primary is, a unit older than its configuration restarts).
    Returns ``(started, requested)`` as UNIT@NODE: waited for, and
    requested without waiting (workers; every unit ``without_waiting``)."""
    started, requested = [], []
    for role, no_block in runbook.START_ORDER:
        no_block = no_block or without_waiting
        calls = {}
        for node in sorted(set(cluster.with_role(role)) & set(nodes)):
            settings = _settings(cluster, "airflow", node)
            calls[node] = ("airflow_units.resume", [
                *_units(cluster, node, role),
                [f"{settings['home']}/airflow.cfg", settings["environment_file"]], no_block], {})
        for node, units in _nodes().call_each(calls, timeout=wait).items():
            (requested if no_block else started).extend(f"{unit}@{node}" for unit in units)
    return started, requested


def airflow_resume(wait=300, down=None):
    """
    Start Airflow again where the runbook stopped it: on every answering
    Airflow node but those in ``down``, in ``runbook.START_ORDER``, start
    the units that are stopped (the schedulers), the single ones (Airflow
    3's DAG processor) only where the recorded primary is; then check
    Airflow's health through the load balancer. Nothing that runs is
    restarted: Airflow's configuration names no primary (the database URL
    lists every database node, the broker is the load balancers' frontend
    that follows the Redis master), so its processes reconnect to the new
    primaries by themselves. Only a unit older than its configuration (its
    node missed a restart) is restarted.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.airflow_resume
    """
    def action():
        cluster = _cluster()
        nodes = sorted(_answering(cluster.airflow_nodes(), down))
        started, requested = _resumed_units(cluster, nodes, wait)
        url = _health_url(cluster)
        if url:
            probes.wait_healthy(url, wait, "Airflow healthy through the load balancer")
        verified = {"started": ", ".join(started) or "none",
                    "healthy": url or "no load balancer"}
        if requested:
            verified["restart requested (warm: running tasks finish first)"] = ", ".join(requested)
        missed = sorted(set(cluster.airflow_nodes()) - set(nodes))
        if missed:
            verified["not reached (they start theirs when their minion returns)"] = \
                ", ".join(missed)
        return verified

    return _step("airflow_resume", action)


def pg_rejoin(node, primary, discard=None):
    """
    Make PostgreSQL on ``node`` a streaming standby of ``primary`` unless it
    already is one: fence it, then ``pg_replication.rejoin`` (nothing to
    copy, pg_rewind, or a base backup); check that ``primary`` shows it
    streaming. A node the record lists as fenced (a forced run fenced it)
    is taken off that list: its silence is a problem again.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_rejoin airflow-server1 airflow-server2
    """
    def action():
        states = _pg_states(node, primary)
        if failover.rejoined(node, states[node], states[primary]):
            return {"already": f"streaming from {primary}", **_forget_fenced(node)}
        if states[node]["system_identifier"] is not None:  # an empty data directory has nothing to fence
            _call(node, "pg_replication.fence", reason=f"rejoining {primary} as a standby",
                  timeout=_LONG_SECONDS)
        rejoined = _call(node, "pg_replication.rejoin", primary=_cluster().address(primary),
                         discard=discard, timeout=_LONG_SECONDS)
        states = _pg_states(node, primary)
        verified = runbook.rejoined(node, primary, rejoined, states[node], states[primary])
        return {**verified, **_forget_fenced(node)}

    return _step("pg_rejoin", action, node=node, primary=primary)


def redis_follow(node, master):
    """
    Make Redis on ``node`` a replica of ``master`` (unless it already is one
    with its link up) and save that role.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.redis_follow airflow-server1 airflow-server2
    """
    def action():
        followed = _call(node, "redis_replication.replicate_from", _cluster().address(master),
                         timeout=_LONG_SECONDS)
        return runbook.redis_follows(node, master, followed)

    return _step("redis_follow", action, master=master, node=node)


def fence_old_primary(node, primary, method, wait=90):
    """
    Prove that the former primary on ``node`` takes no writes, before
    ``primary`` is promoted, by ``method`` (the pre-flight's choice):
    "minion" (its minion answers: PostgreSQL is stopped and fenced; Redis
    too, unless ``primary``'s replica can take the master role over by
    handover), "agent" (the fence agent of pillar failover:fence powers it
    off) or "operator" (the operator named it fenced). Then its PostgreSQL
    port, and its Redis port unless it is kept for the handover, must be
    closed as seen from ``primary``.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.fence_old_primary airflow-server1 airflow-server2 agent
    """
    def action():
        cluster = _cluster()
        pg_port = int(_settings(cluster, "postgresql", node)["port"])
        redis_port = int(_settings(cluster, "redis", node)["port"])
        ports = [pg_port, redis_port]
        if method == "minion":
            _call(node, "pg_replication.fence", reason=f"failing over to {primary}",
                  timeout=_LONG_SECONDS)
            if failover.redis_handover_possible(_call(node, "redis_replication.status"),
                                                _call(primary, "redis_replication.status")):
                ports, how = [pg_port], "by its minion: PostgreSQL stopped and fenced; Redis " \
                                        "kept for the handover"
            else:
                _call(node, "redis_replication.fence", cluster.address(primary))
                how = "by its minion: PostgreSQL and Redis stopped and fenced"
        elif method == "agent":
            how = ha_nodes.run_fence_agent(failover.fence_agent(cluster), node,
                                           cluster.address(node), wait)
        elif method == "operator":
            how = "by the operator (pillar fenced)"
        else:
            raise errors.InvalidInput(f"unknown fence method {method!r}",
                                      fix="use minion, agent or operator")
        _nodes().wait_ports_closed(primary, cluster.address(node), ports, wait)
        return {"fenced": how, "verified": f"ports {', '.join(map(str, ports))} of "
                f"{cluster.address(node)} closed, seen from {primary}"}

    return _step("fence_old_primary", action, node=node)


def returning_node(node):
    """
    Bring a node whose minion has just started up to date, when its copy of
    the topology record is older than the master's record: it was down
    while a runbook moved the primaries. Its record copy (which its start
    guards go by) and its Airflow configuration are applied; its single
    Airflow units (Airflow 3's DAG processor) run only where the recorded
    primary is, and its units that are stopped or older than their
    configuration start; a node that missed nothing is left alone. The
    reactor (etc/salt/master) runs this on every minion start. Its Airflow
    processes need nothing else: the broker frontend and the database URL
    already lead to the new primaries.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.returning_node airflow-worker1
    """
    cluster = _cluster()
    if node not in cluster.nodes:
        return {"node": node, "applied": "nothing: not a node of the pillar"}
    master_generation = failover.generation_of(read_record(record_path(__opts__)))
    copy = _record_copies(cluster, [node])[node]
    if failover.generation_of(copy) >= master_generation:
        return {"node": node, "applied": "nothing: its record copy is current"}
    sls = ["common.topology_record"] + (["airflow.config"] if node in cluster.airflow_nodes()
                                        else [])
    _say(f"==> {node} returned with record generation {failover.generation_of(copy)} "
         f"(the master's: {master_generation}): applying {', '.join(sls)}")
    runbook.state_applied(", ".join(sls), [node], {node: _call(
        node, "state.sls", ",".join(sls), queue=True, timeout=_LONG_SECONDS)})
    _, requested = _resumed_units(cluster, [node], _LONG_SECONDS, without_waiting=True)
    return {"node": node, "applied": ", ".join(sls), "generation": master_generation,
            "restart requested": ", ".join(requested) or "none"}


def unfence(node=None, wait=120):
    """
    Let the rightful writer take writes after start guards fenced it (they
    could not prove which node is the writer: a peer was down or cut off).
    The writer is the node the newest topology record names (the master's,
    or a database node's copy), provided it answers and no answering node
    is on a later timeline; with ``node``, refused unless it is that one.
    Its PostgreSQL is released (its guard lets it start as the primary,
    once) and its Redis made the master; the other answering nodes' Redis
    follow it; a master record older than the copies is written anew.
    Fenced former primaries stay fenced: rejoin them with orch.failback.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.unfence
        salt-run airflow_ha.unfence airflow-server2
    """
    def action():
        cluster = _cluster()
        answering = _answering(set(cluster.database_nodes()) | set(cluster.redis_nodes()))
        pg_states, redis_states = _nodes().data_tier_states(cluster, answering)
        master_record = read_record(record_path(__opts__))
        decision = failover.unfence_decision(master_record,
                                             _record_copies(cluster, sorted(answering)),
                                             pg_states, node)
        if decision["refused"]:
            raise errors.Refused(f"unfence refused: {decision['refused']}")
        writer = decision["writer"]
        done = {"writer": writer, "generation": decision["generation"]}
        if pg_states[writer].get("role") != "primary":
            released = _call(writer, "pg_replication.release",
                             generation=decision["generation"], timeout=_LONG_SECONDS)
            done["postgresql"] = f"released, writable after {released['seconds']} s"
        if (redis_states.get(writer) or {}).get("role") != "master":
            _call(writer, "redis_replication.promote", force=True, timeout=_LONG_SECONDS)
            done["redis"] = "promoted"
        for follower in sorted(set(redis_states) - {writer}):
            _call(follower, "redis_replication.replicate_from", cluster.address(writer),
                  timeout=_LONG_SECONDS)
        if failover.generation_of(master_record) < decision["generation"]:
            recorded = record_primary(writer,
                                      reason=f"airflow_ha.unfence: the copies named {writer}")
            if "Error" in recorded:
                raise errors.OperationFailed(recorded["Error"],
                                             fix=recorded["what to do next"])
        probes.wait_without_problems(
            lambda: [problem for problem in failover.topology_problems(
                writer, *_nodes().data_tier_states(cluster, answering), set(),
                cluster.address(writer)) if "primar" in problem or "masters" in problem],
            wait, f"{writer} the one writable PostgreSQL and Redis master")
        return done

    named = node or "the writer"
    return _step("unfence", action, node=named)


def verify(wait=120, down=None):
    """
    Check a runbook's end state: one writable PostgreSQL and one Redis
    master, both on the recorded primary, every other database node
    answering and streaming from it, or known fenced (the record's
    ``fenced``), Airflow healthy through the load balancer. Nodes in
    ``down`` (the pre-flight found them down) are not asked again, but a
    database node among them is a problem unless it is known fenced.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.verify
    """
    def action():
        cluster = _cluster()
        nodes = sorted(set(cluster.database_nodes()) | set(cluster.redis_nodes()))
        answering = _answering(nodes, down)

        fenced = (read_record(record_path(__opts__)) or {}).get("fenced", ())

        def problems():
            return failover.topology_problems(
                cluster.primary, *_nodes().data_tier_states(cluster, answering),
                set(nodes) - answering, cluster.address(cluster.primary), fenced)

        probes.wait_without_problems(problems, wait, "the expected topology")
        url = _health_url(cluster)
        if url:
            probes.wait_healthy(url, wait, "Airflow healthy through the load balancer")
        verified = {"primary": cluster.primary, "airflow": "healthy" if url else "not checked"}
        if set(nodes) - answering:
            verified["down, known fenced"] = ", ".join(sorted(set(nodes) - answering))
        return verified

    return _step("verify", action)


# --- Secret rotation (orch.rotate; its plan: ha_core.rotation) -----------------------


def rotation_plan():
    """
    The pre-flight of ``orch.rotate``: wait for jobs an earlier run left
    running, check the pillar, find the primary; print and return the plan
    (``ha_core.rotation.plan``). Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.rotation_plan
    """
    cluster = _cluster()
    _say(f"==> pre-flight (rotate): inspecting {', '.join(sorted(cluster.nodes))}")
    try:
        answering = _answering(cluster.nodes)
        refusal, pg_states, _ = _inspect(cluster, answering)
        drain_for = [what for what, changes in (
            ("Airflow's database password", _airflow_password_changes),
            ("the token signing key", _token_key_changes)) if changes(cluster, answering)]
        result = rotation.plan(cluster, answering, pg_states, refusal, drain_for=drain_for)
    except errors.HaError as error:
        result = {"primary": cluster.primary, "order": [], "down": [], "fernet_keys": 0,
                  "drain": False, "drain_for": [],
                  "refused": f"the pre-flight could not inspect the cluster: {error}"}
    for line in rotation.plan_lines(result):
        _say(line)
    return result


def drain_workers(down=None):
    """
    Stop the Celery workers on every answering node but those in ``down``:
    each stops taking tasks and finishes those it runs (a warm shutdown,
    within the unit's stop timeout). Queued tasks wait; the workers'
    highstate starts them again.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.drain_workers
    """
    def action():
        return _stop_units("airflow-worker", down, _LONG_SECONDS)

    return _step("drain_workers", action)


def _airflow_password_changes(cluster, answering):
    """Whether the Airflow database role's password on the primary differs
    from the pillar's (its state, in test mode, would change it)."""
    if cluster.primary not in answering or cluster.primary not in cluster.database_nodes():
        return False
    reply = _nodes().apply([cluster.primary], "postgresql.primary", 120, test=True)
    results = reply.get(cluster.primary)
    if not isinstance(results, dict):
        raise errors.OperationFailed(f"postgresql.primary (test) on {cluster.primary}: {results}")
    return any("postgresql-airflow-owner" in key and result.get("result") is None
               for key, result in results.items())


def _token_key_changes(cluster, answering):
    """Whether Airflow 3's JWT secret on the workers differs from the
    pillar's: their airflow.cfg's fingerprint against the pillar's
    (``rotation.token_key_fingerprint``). Airflow 2 has none."""
    workers = sorted(set(cluster.with_role("airflow-worker")) & answering)
    if not workers:
        return False
    settings = _settings(cluster, "airflow", workers[0])
    if settings["release_line"] < 3:
        return False
    fingerprint = _call(workers[0], "cmd.run", (
        "python3 -c 'import configparser, hashlib, sys; c = configparser.RawConfigParser(); "
        "c.read(sys.argv[1]); print(hashlib.sha256(c.get(\"api_auth\", \"jwt_secret\", "
        "fallback=\"\").encode()).hexdigest())' " + f"{settings['home']}/airflow.cfg"))
    return fingerprint.strip() != rotation.token_key_fingerprint(cluster.pillar)


def secrets_accepted(node):
    """
    PostgreSQL and Redis on ``node`` take the new passwords: its
    ``postgresql`` and ``redis`` states (on the primary the roles' passwords
    change; every Redis accepts the new password besides the old one and
    authenticates to its master with it), with no restart.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.secrets_accepted airflow-server1
    """
    def action():
        cluster = _cluster()
        sls = ",".join(component for component, nodes in (("postgresql", cluster.database_nodes()),
                                                          ("redis", cluster.redis_nodes()))
                       if node in nodes)
        runbook.state_applied(sls, [node], _nodes().apply([node], sls, _LONG_SECONDS))
        return {"applied": sls}

    return _step("secrets_accepted", action, node=node)


def secrets_applied(wait=300, down=None):
    """
    Every answering node but those in ``down`` takes the new secrets: its
    highstate, all at once (Airflow restarts where its configuration
    changed, HAProxy reloads); then Airflow must be healthy through the
    load balancer.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.secrets_applied
    """
    def action():
        nodes, url = _highstate_until_healthy(_cluster(), wait, down)
        return {"applied on": ", ".join(nodes), "healthy": url or "no load balancer"}

    return _step("secrets_applied", action)


def _highstate_until_healthy(cluster, wait, down, pillar=None):
    """The highstate of every answering node but those in ``down`` (with
    ``pillar`` over the environment's), then Airflow healthy through the
    load balancer within ``wait`` seconds; returns the nodes and the
    health URL (None without a load balancer)."""
    nodes = sorted(_answering(cluster.nodes, down))
    runbook.state_applied("the highstate", nodes,
                          _nodes().apply(nodes, None, _LONG_SECONDS, pillar=pillar))
    url = _health_url(cluster)
    if url:
        probes.wait_healthy(url, wait, "Airflow healthy through the load balancer")
    return nodes, url


def fernet_reencrypt():
    """
    Re-encrypt every connection, variable and trigger with the first of
    the pillar's Fernet keys (``airflow rotate-fernet-key``, once, on the
    node that migrates the database). Run it only once every Airflow
    process has all the keys (``orch.rotate`` does); the old key can then
    be dropped by a later pillar edit.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.fernet_reencrypt
    """
    def action():
        cluster = _cluster()
        node = _migrator(cluster)
        _airflow_command(cluster, node, "rotate-fernet-key")
        return {"re-encrypted on": node}

    return _step("fernet_reencrypt", action)


def redis_retire_passwords(down=None):
    """
    Every answering Redis node but those in ``down`` accepts only the
    current password (``redis_replication.retire_passwords``). A node that
    is down keeps the old password until its highstate, when it returns.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.redis_retire_passwords
    """
    def action():
        cluster = _cluster()
        nodes = sorted(_answering(cluster.redis_nodes(), down))
        retired = {node: _call(node, "redis_replication.retire_passwords")["retired"]
                   for node in nodes}
        return {"retired": ", ".join(f"{count} on {node}" for node, count in retired.items())}

    return _step("redis_retire_passwords", action)


# --- Upgrade and rollback (orch.upgrade, orch.upgrade_rollback; plan: ha_core.upgrade) --

# What the runbooks' state runs pass in: the states may move a node to
# another release line (every Airflow process is stopped by then).
_UPGRADE_PILLAR = {"airflow_upgrade": True}
# Every Airflow process stops in this order: nothing new is scheduled, the
# workers finish their running tasks, then the rest.
_UPGRADE_STOP_ORDER = ("airflow-scheduler", "airflow-worker", "airflow-triggerer",
                       "airflow-flower", "airflow-webserver")


def upgrade_plan(rollback=False):
    """
    The pre-flight of ``orch.upgrade`` (or with ``rollback``,
    ``orch.upgrade_rollback``): which Airflow version every node runs, the
    pillar's ``airflow:version``, the primary and the dumps it keeps; print
    and return the plan (``ha_core.upgrade.plan``). Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_plan
        salt-run airflow_ha.upgrade_plan rollback=True
    """
    cluster = _cluster()
    _say(f"==> pre-flight ({'rollback' if rollback else 'upgrade'}): inspecting "
         f"{', '.join(sorted(cluster.nodes))}")
    try:
        _wait_for_earlier_steps(cluster, _answering(cluster.nodes))
        result = _upgrade_plan(cluster, rollback)
    except errors.HaError as error:
        result = {"mode": None, "from": None, "to": None, "installed": {}, "backup": None,
                  "take_backup": False, "check_dags": False, "migrator": None,
                  "refused": f"the pre-flight could not inspect the cluster: {error}"}
    result["primary"] = cluster.primary
    for line in upgrade.plan_lines(result, rollback):
        _say(line)
    return result


def _upgrade_plan(cluster, rollback):
    answering = _answering(cluster.nodes)
    refusal = failover.pillar_refusal(_nodes().render_validation(sorted(answering)))
    if refusal:
        raise errors.OperationFailed(refusal)
    migrator = _migrator(cluster)
    settings = _settings(cluster, "airflow", migrator)
    versions = _nodes().airflow_versions(answering & set(cluster.airflow_nodes()),
                                         settings["venv"])
    installed = {node: versions.get(node, False) for node in cluster.airflow_nodes()}
    target = str(settings["version"])
    primary_role = None
    if cluster.primary in answering:
        primary_role = _call(cluster.primary, "pg_replication.status")["role"]
    database_current = None
    if rollback and all(version == target for version in installed.values()):
        database_current = _airflow_command(cluster, migrator, "db check-migrations "
                                            "--migration-wait-timeout 1", check=False) == 0
    return upgrade.plan(target, installed, migrator, primary_role,
                        _backups(cluster) if cluster.primary in answering else [],
                        database_current=database_current, rollback=rollback)


def _release_line_refusal(cluster, versions):
    """Why a runbook whose steps apply Airflow's states must not run: an
    answering Airflow node runs another release line than the pillar's
    airflow:version (its states would refuse half-way); or None.
    ``versions``: the answering Airflow nodes', as airflow_versions gives."""
    if not versions:
        return None
    settings = _settings(cluster, "airflow", sorted(versions)[0])
    return upgrade.release_line_refusal(str(settings["version"]), versions)


def _migrator(cluster):
    """The node that migrates the database: the first scheduler."""
    return cluster.with_role("airflow-scheduler")[0]


def _backups(cluster):
    """The file names of the dumps orch.upgrade took on the primary."""
    paths = _call(cluster.primary, "file.find", upgrade.BACKUP_DIRECTORY, type="f",
                  name="airflow-*.dump")
    return [path.rsplit("/", 1)[-1] for path in paths or ()]


def _airflow_command(cluster, node, arguments, check=True):
    """Run ``airflow ARGUMENTS`` on ``node`` as the service account. Returns
    the exit code, or with ``check`` the output, raising OperationFailed
    when it fails."""
    settings = _settings(cluster, "airflow", node)
    result = _call(node, "cmd.run_all", f"{settings['venv']}/bin/airflow {arguments}",
                   runas=settings["user"], env={"AIRFLOW_HOME": settings["home"]},
                   python_shell=False, timeout=_LONG_SECONDS)
    if not check:
        return result["retcode"]
    if result["retcode"] != 0:
        raise errors.OperationFailed(f"airflow {arguments} on {node} exited {result['retcode']}: "
                                     f"{(result['stderr'] or result['stdout'])[-800:]}")
    return result["stdout"]


def upgrade_check_dags():
    """
    Check the DAG folder (``airflow:dags_source`` in the master's
    file_roots) with ruff's Airflow 3 rules, from the master's Python:
    refused when a DAG uses what Airflow 3 removed or moved to a provider
    (AIR301, AIR302, AIR303); deprecated uses (AIR311, AIR312) are counted.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_check_dags
    """
    def action():
        cluster = _cluster()
        folder = _dag_folder(_settings(cluster, "airflow", _migrator(cluster))["dags_source"])
        if importlib.util.find_spec("ruff") is None:
            raise errors.OperationFailed(
                f"ruff is not installed in the master's Python ({sys.executable}): install it "
                "there (salt-pip install ruff, or pip install ruff in its environment)")
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select",
             ",".join(upgrade.BREAKING_DAG_RULES + upgrade.SUGGESTED_DAG_RULES),
             "--output-format", "concise", folder],
            capture_output=True, text=True, check=False)
        breaking, suggested = upgrade.dag_check_findings(result.stdout)
        if breaking:
            raise errors.OperationFailed(
                f"{len(breaking)} uses in the DAGs break on Airflow 3 (fix them, e.g. ruff check "
                f"--select AIR3 --fix {folder}): " + "; ".join(breaking[:10]))
        if result.returncode not in (0, 1):
            raise errors.OperationFailed(f"ruff failed on {folder}: {result.stderr[-500:]}")
        return {"checked": folder, "breaking": 0, "deprecated (still working)": len(suggested)}

    return _step("upgrade_check_dags", action)


def _dag_folder(source):
    """The directory of a ``salt://`` DAG source in the master's file_roots."""
    relative = source.removeprefix("salt://").strip("/")
    for root in __opts__["file_roots"]["base"]:
        if os.path.isdir(os.path.join(root, relative)):
            return os.path.join(root, relative)
    raise errors.OperationFailed(f"airflow:dags_source {source} is not a folder in the master's "
                                 "file_roots: check the DAGs by hand (ruff check --select AIR3)")


def upgrade_install(version):
    """
    Install Airflow ``version`` (the pillar's) beside the running one on
    every Airflow node, in its own virtual environment, while the old one
    keeps running; then check the new version's configuration on the node
    that migrates the database with its ``airflow config update``: refused
    when it lists a change to make.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_install 3.3.2
    """
    def action():
        cluster = _cluster()
        nodes = sorted(cluster.airflow_nodes())
        runbook.state_applied("airflow.install", nodes, _nodes().apply(
            nodes, "airflow.install", _LONG_SECONDS, pillar=_UPGRADE_PILLAR,
            exclude=["airflow-venv-current"]))
        migrator = _migrator(cluster)
        settings = _settings(cluster, "airflow", migrator)
        runbook.state_applied("airflow.upgrade_check", [migrator], _nodes().apply(
            [migrator], "airflow.upgrade_check", _LONG_SECONDS, pillar=_UPGRADE_PILLAR))
        check_home = f"{settings['home']}/upgrade-check"
        # Its dry run prints the whole configuration, secrets included: only
        # the list of changes leaves the node.
        try:
            result = _call(migrator, "cmd.run_all", cmd=(
                f"out=$({settings['venvs']}/{version}/bin/airflow config update) || exit; "
                "printf '%s\\n' \"$out\" | grep -E '^ *- \\[' || true"),
                shell="/bin/bash", runas=settings["user"], env={"AIRFLOW_HOME": check_home},
                timeout=_LONG_SECONDS)
        finally:
            _call(migrator, "file.remove", check_home)
        if result["retcode"] != 0:
            raise errors.OperationFailed(f"airflow config update ({version}) on {migrator} exited "
                                         f"{result['retcode']}: {result['stderr'][-800:]}")
        needed = [line.strip() for line in result["stdout"].splitlines() if line.strip()]
        if needed:
            raise errors.OperationFailed(
                f"airflow config update ({version}) lists changes to this tree's configuration "
                "(salt/airflow/files/airflow.cfg.jinja): " + "; ".join(needed[:10]))
        return {"installed on": ", ".join(nodes), "configuration": "nothing to update"}

    return _step("upgrade_install", action, version=version)


def upgrade_backup(node, version):
    """
    Dump the Airflow database on the primary ``node`` (``pg_dump``, custom
    format) into ``ha_core.upgrade.BACKUP_DIRECTORY``, named after the
    ``version`` it was taken from, and check that the dump reads back.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_backup airflow-server1 2.10.5
    """
    def action():
        cluster = _cluster()
        postgresql = _settings(cluster, "postgresql", node)
        name = upgrade.backup_name(version, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        path = f"{upgrade.BACKUP_DIRECTORY}/{name}"
        _call(node, "file.mkdir", upgrade.BACKUP_DIRECTORY, user="postgres", group="postgres",
              mode="0700")
        _postgres_command(node, ["pg_dump", "--format=custom", f"--port={postgresql['port']}",
                                 f"--file={path}", postgresql["database"]])
        entries = _postgres_command(node, ["pg_restore", "--list", path]).count("\n")
        size = _call(node, "file.stats", path)["size"]
        return {"dump": f"{node}:{path}", "size": f"{size / 1e6:.1f} MB", "entries": entries}

    return _step("upgrade_backup", action, node=node)


def _postgres_command(node, argv):
    """Run a PostgreSQL client command as postgres on ``node``; its output,
    OperationFailed when it fails."""
    result = _call(node, "cmd.run_all", argv, runas="postgres", python_shell=False,
                   timeout=_LONG_SECONDS)
    if result["retcode"] != 0:
        raise errors.OperationFailed(f"{argv[0]} on {node} exited {result['retcode']}: "
                                     f"{result['stderr'][-800:]}")
    return result["stdout"]


def upgrade_stop(down=None):
    """
    Stop every Airflow process on every answering Airflow node but those in
    ``down``, the units of every release line: schedulers, workers (once
    their running tasks finish), triggerers, Flower, webservers.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_stop
    """
    def action():
        stopped = [unit for role in _UPGRADE_STOP_ORDER
                   for unit in _stopped_units(role, down, _LONG_SECONDS, every_line=True)]
        return {"stopped": ", ".join(stopped) or "nothing ran"}

    return _step("upgrade_stop", action)


def upgrade_migrate(node, version):
    """
    On ``node`` (the one that migrates the database), with every Airflow
    process stopped: point it at Airflow ``version`` with its
    configuration, run ``airflow db migrate`` once, and delete the stored
    web sessions on the primary (the new release line cannot read the old
    one's: users log in again).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_migrate airflow-server1 3.3.2
    """
    def action():
        cluster = _cluster()
        runbook.state_applied("airflow.install,airflow.config", [node], _nodes().apply(
            [node], "airflow.install,airflow.config", _LONG_SECONDS, pillar=_UPGRADE_PILLAR))
        started = time.monotonic()
        _airflow_command(cluster, node, "db migrate")
        seconds = round(time.monotonic() - started, 1)
        postgresql = _settings(cluster, "postgresql", cluster.primary)
        _postgres_command(cluster.primary, [
            "psql", "--no-psqlrc", "--quiet", f"--port={postgresql['port']}",
            f"--dbname={postgresql['database']}", "--set=ON_ERROR_STOP=1", "--command",
            "DO $$ BEGIN IF to_regclass('public.session') IS NOT NULL THEN "
            "DELETE FROM session; END IF; END $$"])
        return {"migrated to": version, "db migrate": f"{seconds} s",
                "web sessions": "deleted (users log in again)"}

    return _step("upgrade_migrate", action, node=node, version=version)


def upgrade_restore(node, backup):
    """
    Restore the Airflow database on the primary ``node`` from the dump
    ``backup`` (a file name in ``ha_core.upgrade.BACKUP_DIRECTORY``) that
    orch.upgrade took: the database is dropped and created again from it.
    Every Airflow process must be stopped (``upgrade_stop``).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_restore airflow-server1 airflow-2.10.5-20261201T101500Z.dump
    """
    def action():
        cluster = _cluster()
        postgresql = _settings(cluster, "postgresql", node)
        port, database = f"--port={postgresql['port']}", postgresql["database"]
        _postgres_command(node, [
            "psql", "--no-psqlrc", "--quiet", port, "--dbname=postgres", "--command",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"])
        started = time.monotonic()
        _postgres_command(node, ["pg_restore", port, "--dbname=postgres", "--clean", "--create",
                                 "--if-exists", "--exit-on-error",
                                 f"{upgrade.BACKUP_DIRECTORY}/{backup}"])
        seconds = round(time.monotonic() - started, 1)
        tables = _postgres_command(node, [
            "psql", "--no-psqlrc", "--tuples-only", "--no-align", port, f"--dbname={database}",
            "--command", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"]).strip()
        return {"restored": backup, "restore": f"{seconds} s", "tables": tables}

    return _step("upgrade_restore", action, node=node)


def upgrade_start(wait=300, down=None):
    """
    Every answering node but those in ``down`` runs the pillar's Airflow
    version: its highstate (the virtual environment link, the
    configuration, the units of the version's release line, the load
    balancer's health check); then Airflow must be healthy through the
    load balancer.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.upgrade_start
    """
    def action():
        cluster = _cluster()
        nodes, url = _highstate_until_healthy(cluster, wait, down, pillar=_UPGRADE_PILLAR)
        versions = _nodes().airflow_versions(
            set(nodes) & set(cluster.airflow_nodes()),
            _settings(cluster, "airflow", _migrator(cluster))["venv"])
        return {"running": ", ".join(f"{node} {version}"
                                     for node, version in sorted(versions.items())),
                "healthy": url or "no load balancer"}

    return _step("upgrade_start", action)


# --- Backups and restores (pgBackRest) -------------------------------------------------

# A backup or a restore of a large database takes long.
_BACKUP_SECONDS = 6 * 3600


def _repository(cluster):
    """The node with the backup role, which holds the pgBackRest repository."""
    nodes = cluster.with_role("backup")
    if not nodes:
        raise errors.InvalidInput(
            "no node has the backup role",
            fix="give one node the backup role in cluster:nodes and apply the highstate "
                "(the README's \"Disaster recovery\")")
    return nodes[0]


def backup(type="incr"):  # noqa: A002 (Salt's CLI names it type)
    """
    Take a backup of ``type`` (full, diff or incr) now, on the node with the
    backup role, followed by a copy of the Redis broker's data (as the
    scheduled backups are), then check that the primary's WAL reaches the
    archive (``pgbackrest check``). The step of ``orch.backup``.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.backup type=full
        salt-run state.orchestrate orch.backup pillar='{"type": "full"}'
    """
    cluster = _cluster()
    node = (cluster.with_role("backup") or ["the backup node"])[0]

    def action():
        _repository(cluster)
        taken = _call(node, "pg_backup.backup", type=type, wait=_BACKUP_SECONDS,
                      timeout=_BACKUP_SECONDS)
        checked = _call(node, "pg_backup.check", timeout=_LONG_SECONDS)
        return {"backup": f"{taken['label']} ({taken['type']})",
                "database": report.mebibytes(taken["database_bytes"]),
                "copied": report.mebibytes(taken["backup_bytes"]),
                "stored": report.mebibytes(taken["repository_bytes"]),
                "Redis broker copy": report.redis_copy_text(taken["redis_copy"]),
                "archive check": f"ok in {checked['seconds']} s"}

    return _step("backup", action, type=type, node=node)


def _restore_node(cluster):
    """Where a restored copy runs by default: the standby when it answers
    (the primary serves Airflow), else the primary."""
    servers = cluster.database_nodes()
    answering = _answering(servers)
    for node in sorted(answering, key=lambda name: name == cluster.primary):
        return node
    raise errors.Unreachable(f"no database server answers ({', '.join(servers)})")


def restore(target="latest", time=None, restore_point=None, backup_set=None, node=None,
            port=None):
    """
    Restore the Airflow database from the repository into a new scratch
    directory on ``node`` (default: the standby) and start it there on
    ``port`` (default pgbackrest:restore:port; unix socket only), stopped at
    the target: the end of the archive (``target=latest``), a ``time`` (ISO
    8601 with its UTC offset) or a named ``restore_point``
    (``airflow_ha.restore_point``), from ``backup_set`` (a backup's label)
    or the backup pgBackRest picks (``pg_backup.restore`` says which). The
    running pair is not touched. Prints
    what the copy holds and how to look into it and remove it. The step of
    ``orch.restore``.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.restore time='2026-12-02 04:31:00+00:00'
        salt-run state.orchestrate orch.restore pillar='{"time": "2026-12-02 04:31:00+00:00"}'
    """
    cluster = _cluster()
    described = backups.describe_target(time, restore_point)
    named = node or "the standby"

    def action():
        backups.restore_target(target, time, restore_point)  # bad input: before anything
        where = node or _restore_node(cluster)
        _say(f"    restoring on {where}")
        restored = _call(where, "pg_backup.restore", target=target, time=time,
                         restore_point=restore_point, backup_set=backup_set, port=port,
                         wait=_BACKUP_SECONDS,
                         timeout=_BACKUP_SECONDS)
        airflow = restored.get("airflow") or {}
        return {"node": where,
                "directory": restored["directory"],
                "port": restored["port"],
                "from backup": restored["backup_set"],
                "recovered to": restored["recovered_to"],
                "databases": ", ".join(f"{name} {report.mebibytes(size)}" for name, size
                                       in sorted(restored["databases"].items())),
                "DAG runs": airflow.get("dag_runs"),
                "newest DAG run": airflow.get("newest_dag_run"),
                "look into it": f"salt {where} pg_backup.restored_sql 'SELECT ...' "
                                f"database=airflow (or psql -p {restored['port']} as postgres "
                                f"on {where})",
                "remove it": f"salt {where} pg_backup.drop_restored {restored['directory']}"}

    return _step("restore", action, target=described, node=named)


def restore_point(name):
    """
    Create a named restore point on the primary, a target for
    ``orch.restore`` (``restore_point=NAME``): before a risky change, say.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.restore_point before-upgrade
    """
    cluster = _cluster()
    return _call(cluster.primary, "pg_backup.restore_point", name)


def disaster_plan(node=None):
    """
    The pre-flight of ``orch.disaster_recovery``: which server to restore
    as the primary (``node``, default the preferred primary), the other
    database servers to rebuild as its standbys, and whether it may run
    (``refused``: why not, see ``ha_core.backups.disaster_refusal``).
    Prints what it found; changes nothing. Returns ``node``, ``others``,
    ``down`` (other nodes that did not answer: the steps do not wait for
    them), ``refused``.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.disaster_plan
        salt-run airflow_ha.disaster_plan node=airflow-server2
    """
    cluster = _cluster()
    node = node or cluster.preferred
    servers = cluster.database_nodes()
    _say(f"==> pre-flight (disaster recovery): inspecting {', '.join(servers)}")
    answering = _answering(cluster.nodes)
    states = {}
    for server in servers:
        try:
            states[server] = (_call(server, "pg_replication.status") if server in answering
                              else "its minion does not answer")
        except errors.HaError as error:
            states[server] = str(error)
    for server, state in sorted(states.items()):
        _say(f"    {server}: " + (state if isinstance(state, str) else
                                   f"PostgreSQL {state['role']}, timeline {state['timeline']}"))
    try:
        kept = _call(_repository(cluster), "pg_backup.info")["backups"]
        _say(f"    repository: {len(kept)} backup(s)"
             + (f", the newest {kept[-1]['label']}" if kept else ""))
        refused = backups.disaster_refusal(node, servers, states, kept)
    except errors.HaError as error:
        refused = f"the repository cannot be read: {error}"
    if refused:
        _say(f"    refused: {refused}")
    return {"node": node, "others": [server for server in servers if server != node],
            "down": sorted(set(cluster.nodes) - set(answering) - set(servers)),
            "refused": refused}


def pg_stop(nodes):
    """
    Stop PostgreSQL on ``nodes`` (the step of ``orch.disaster_recovery``
    before the restore: no server may run beside the restored primary) and
    check that each is stopped.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_stop '[airflow-server1, airflow-server2]'
    """
    named = ", ".join(sorted(nodes))

    def action():
        _nodes().call_each({node: ("pg_replication.stop", [], {}) for node in nodes},
                           timeout=_LONG_SECONDS)
        states = _nodes().call_each({node: ("pg_replication.status", [], {}) for node in nodes})
        running = sorted(node for node, state in states.items() if state["running"])
        if running:
            raise errors.OperationFailed(f"PostgreSQL still runs on {', '.join(running)}")
        return {"stopped": named}

    return _step("pg_stop", action, nodes=named)


def pg_restore_primary(node, time=None, restore_point=None, backup_set=None):
    """
    Restore PostgreSQL on ``node``, which the topology record names, from
    the repository into its own data directory (``pg_backup.restore_server``:
    the end of the archive, or a ``time`` or ``restore_point``), started as
    the primary on a new timeline; then check that its WAL reaches the
    archive. The step of ``orch.disaster_recovery``.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_restore_primary airflow-server1
    """
    cluster = _cluster()
    target = backups.describe_target(time, restore_point)

    def action():
        record = read_record(record_path(__opts__))
        if not record or record.get("primary") != node:
            raise errors.Refused(f"the topology record does not name {node} as the primary",
                                 fix=f"salt-run airflow_ha.record_primary {node} "
                                     "reason='disaster recovery', then run again")
        restored = _call(node, "pg_backup.restore_server", generation=record["generation"],
                         time=time, restore_point=restore_point, backup_set=backup_set,
                         wait=_BACKUP_SECONDS, timeout=_BACKUP_SECONDS)
        checked = _call(_repository(cluster), "pg_backup.check", timeout=_LONG_SECONDS)
        return {"from backup": restored["backup_set"], "timeline": restored["timeline"],
                "DAG runs": restored.get("dag_runs"),
                "newest DAG run": restored.get("newest_dag_run"),
                "data directory before": restored["kept"] or "empty",
                "archive check": f"ok in {checked['seconds']} s"}

    return _step("pg_restore_primary", action, node=node, target=target)


def _backup_status(cluster, answering):
    """The backups' and the archive's state for ``status``: the
    repository's (``pg_backup.status``), the primary's archiving, and their
    problems; None without a backup node."""
    repositories = cluster.with_role("backup")
    if not repositories:
        return None
    node = repositories[0]
    state = {"node": node, "problems": []}
    try:
        state.update(_call(node, "pg_backup.status", timeout=30))
    except errors.HaError as error:
        state["problems"].append(f"the backup node {node}: {error}")
    if cluster.primary in answering:
        settings = _settings(cluster, "pgbackrest", cluster.primary)
        try:
            state["archiver"] = _call(cluster.primary, "pg_backup.archive_state", timeout=30)
            state["problems"] += backups.archive_problems(
                state["archiver"], cluster.primary, settings["archive_lag_seconds"],
                settings["stanza"])
        except errors.HaError as error:
            state["problems"].append(f"WAL archiving on {cluster.primary}: {error}")
    return state

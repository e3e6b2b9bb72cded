"""
The runbooks' decisions and checks, from the states the nodes report
(``pg_replication.status``, ``redis_replication.status``): whether a
failover is planned or unplanned and whether it may run, what a failback
does, whether a switch lost nothing, and what is wrong with the cluster
against the topology record. Nodes are named by minion id.
"""

from ha_core.pg_facts import lag_bytes, parse_lsn

# A forced failover refuses when more WAL than this is known to be missing
# on the standby (pillar failover:max_lag_bytes overrides it).
MAX_LAG_BYTES = 16 * 1024 ** 2


def received_everything(checkpoint_lsn, received_lsn):
    """
    Whether a standby that received WAL up to ``received_lsn`` (where its
    last complete record begins) has the old primary's shutdown checkpoint
    record, which begins at ``checkpoint_lsn``: then it has every commit.
    """
    return received_lsn is not None and parse_lsn(received_lsn) >= parse_lsn(checkpoint_lsn)


def switch_proves_no_loss(checkpoint_lsn, switch_lsn):
    """
    Whether the promoted timeline began after the old primary's shutdown
    checkpoint record: the standby replayed all of the old timeline.
    """
    return parse_lsn(switch_lsn) > parse_lsn(checkpoint_lsn)


def failover_decision(current, candidate, current_up, candidate_state, force,
                      last_primary_lsn=None, last_seen_at=None, max_lag_bytes=None):
    """
    Decide how orch.failover moves the primary from ``current`` to
    ``candidate``: returns ``{"mode": "planned"|"unplanned", "refused": reason
    or None, "at_risk": text or None, "lag_bytes": int or None}``.

    current_up
        Whether the current primary's PostgreSQL answers (its minion too).
    candidate_state
        ``pg_replication.status`` of the candidate (None: it does not answer).
    last_primary_lsn, last_seen_at
        The current primary's last known WAL position and when it was seen
        (from the Salt mine), when it is down.
    max_lag_bytes
        With force, the most known-missing WAL that is still accepted.
    """
    decision = {"mode": "planned" if current_up else "unplanned", "refused": None,
                "at_risk": None, "lag_bytes": None}
    if candidate_state is None:
        decision["refused"] = (f"{candidate} does not answer: there is no standby to promote; "
                               "bring it back, then run the failover again")
        return decision
    if candidate_state.get("role") != "standby":
        decision["refused"] = (f"{candidate} is {candidate_state.get('role')}, not a running "
                               f"standby: check it with `salt {candidate} pg_replication.status`")
        return decision
    if candidate_state.get("fenced"):
        decision["refused"] = (f"{candidate} is fenced: it is a former primary that has not "
                               "rejoined yet, and its data may have diverged; rejoin it with "
                               "orch.failback before it can be promoted")
        return decision
    if current_up:
        return decision
    received = candidate_state.get("received_lsn")
    if last_primary_lsn and received:
        decision["lag_bytes"] = lag_bytes(last_primary_lsn, received)
        known = (f"{decision['lag_bytes']} bytes of WAL are known to be missing"
                 if decision["lag_bytes"] else f"{candidate} has all of it")
        decision["at_risk"] = (
            f"{current} is down; the master last saw it at WAL {last_primary_lsn} "
            f"({last_seen_at or 'time unknown'}) and {candidate} has received up to {received}: "
            f"{known}, but whatever {current} committed after it was last seen is lost, and so "
            "are Redis writes it acknowledged but had not replicated")
    else:
        seen = (f"the master last saw it at WAL {last_primary_lsn}" if last_primary_lsn
                else "the master knows no recent WAL position of it")
        decision["at_risk"] = (
            f"{current} is down; {seen}, and {candidate} reports no received position: "
            f"how much of what {current} committed is lost cannot be told, and so are Redis "
            "writes it acknowledged but had not replicated"
            if not received else
            f"{current} is down and the master knows no recent WAL position of it; {candidate} "
            f"has received up to {received}: whatever {current} committed beyond that is lost, "
            "and so are Redis writes it acknowledged but had not replicated")
    if not force:
        decision["refused"] = (
            f"unplanned failover refused: {decision['at_risk']}. If {current} cannot come back "
            "soon, accept that loss with: salt-run state.orchestrate orch.failover "
            "pillar='{\"force\": true}'")
    elif (max_lag_bytes is not None and decision["lag_bytes"] is not None
          and decision["lag_bytes"] > max_lag_bytes):
        decision["refused"] = (
            f"unplanned failover refused even with force: {decision['lag_bytes']} bytes of WAL "
            f"are known to be missing on {candidate}, more than failover:max_lag_bytes "
            f"({max_lag_bytes}). Bring {current} back if at all possible; to accept the loss, "
            "raise the bound for this run: pillar='{\"force\": true, \"max_lag_bytes\": "
            f"{decision['lag_bytes']}}}'")
    return decision


def failback_decision(old, new, answering, pg_states, switch_back, old_address):
    """
    Decide what orch.failback does to bring the preferred primary ``new``
    back from the current primary ``old``: returns ``{"mode": "nothing" |
    "planned" | "rejoin-only" | None, "rejoin": node or None, "refused":
    reason or None}``.

    answering
        The nodes whose minions answered.
    pg_states
        ``{node: pg_replication.status}`` of the database nodes that answered.
    switch_back
        Whether to switch the roles back after the rejoin.
    old_address
        The current primary's address (a standby names its primary by name
        or by address).
    """
    decision = {"mode": None, "rejoin": None, "refused": None}
    if new == old:
        decision["mode"] = "nothing"
    elif new not in answering:
        decision["refused"] = (f"{new}, the preferred primary, does not answer: start it "
                               "(its PostgreSQL comes up fenced), then run the failback again")
    elif old not in pg_states or pg_states[old].get("role") != "primary":
        decision["refused"] = (f"{old}, the current primary, is not a running primary: "
                               "fail over to it first, or check salt-run airflow_ha.status")
    else:
        following = (pg_states[new].get("standby_of") or {}).get("host")
        if not streams_from(new, pg_states[new], pg_states[old]) or following not in (
                old, old_address):
            decision["rejoin"] = new
        decision["mode"] = "planned" if switch_back else "rejoin-only"
    return decision


def streams_from(node, state, primary_state):
    """Whether ``node`` (its status ``state``) is a standby that the primary
    (its status ``primary_state``) shows streaming."""
    streaming = {entry["application_name"] for entry in primary_state.get("standbys", [])
                 if entry["state"] == "streaming"}
    return state.get("role") == "standby" and node in streaming


def topology_problems(recorded, pg_states, redis_states, down, recorded_address=None):
    """
    Return what is wrong with the cluster against the topology record, as a
    list of sentences (empty: exactly one writable PostgreSQL and one Redis
    master, both on the recorded node, and every other answering node
    streaming from it).

    recorded
        The node the topology record names as primary.
    pg_states, redis_states
        ``{node: status}`` of the nodes that answered.
    down
        Nodes that did not answer (expected after an unplanned failover).
    recorded_address
        The recorded primary's address, which Redis replicas must follow
        (not checked when None).
    """
    problems = []
    primaries = sorted(node for node, state in pg_states.items() if state.get("role") == "primary")
    if primaries != [recorded]:
        problems.append(f"PostgreSQL primaries: {', '.join(primaries) or 'none'} "
                        f"(expected only {recorded})")
    for node in sorted(set(pg_states) - {recorded}):
        if not streams_from(node, pg_states[node], pg_states.get(recorded, {})):
            problems.append(f"PostgreSQL on {node} is {pg_states[node].get('role')}, not a standby "
                            f"streaming from {recorded}")
    masters = sorted(node for node, state in redis_states.items() if state.get("role") == "master")
    if masters != [recorded]:
        problems.append(f"Redis masters: {', '.join(masters) or 'none'} (expected only {recorded})")
    for node in sorted(set(redis_states) - {recorded}):
        state = redis_states[node]
        if (state.get("role") != "replica" or state.get("master_link_status") != "up"
                or recorded_address not in (None, state.get("master_host"))):
            problems.append(f"Redis on {node} is not a replica with its link to {recorded} up")
    for node in sorted(down):
        if node == recorded:
            problems.append(f"{node}, the recorded primary, does not answer")
    return problems


def airflow_health_problems(body):
    """
    Return what is unhealthy in the JSON body of Airflow's ``/health`` (which
    answers HTTP 200 either way), as a list (empty: healthy).
    """
    if "error" in body:
        return [f"no answer ({body['error']})"]
    statuses = {part: (body.get(part) or {}).get("status") for part in ("metadatabase", "scheduler")}
    return [f"{part} is {status}" for part, status in statuses.items() if status != "healthy"]


def pillar_refusal(rendered):
    """
    Return why a runbook must not run, from the pillar validation as a node
    rendered it (``state.show_sls validate``: a dict when valid, a list of
    render errors otherwise), or None.
    """
    if not isinstance(rendered, list):
        return None
    text = " ".join(str(error) for error in rendered)
    message = text.partition("Jinja error: ")[2].partition("\nTraceback")[0].strip()
    return f"the pillar is invalid: {message or text}"


def plan(cluster, action, answering, pg_states, force=False, switch_back=True,
         max_lag_bytes=None, last_primary_lsn=None, last_seen_at=None, refusal=None):
    """
    Decide what the orchestration ``action`` (``failover`` or ``failback``)
    does, from the cluster (``ha_core.cluster.Cluster``), the nodes that
    answered and the database nodes' statuses. Returns ``action``, ``old``
    and ``new`` (the primary before and after), ``mode`` (planned,
    unplanned, rejoin-only, nothing), ``rejoin``, ``refused``, ``at_risk``,
    ``force``, ``down``, ``airflow_nodes`` and ``states``.

    max_lag_bytes
        The bound of a forced failover; None or "" (pillar.get's default)
        takes ``failover:max_lag_bytes`` from the pillar, or MAX_LAG_BYTES.
    last_primary_lsn, last_seen_at
        The current primary's last position in the Salt mine, and when.
    refusal
        Why the runbook must not run at all (an invalid pillar), or None.
    """
    old = cluster.primary
    result = {"action": action, "old": old, "new": None, "rejoin": None, "refused": refusal,
              "at_risk": None, "mode": None, "force": bool(force),
              "down": sorted(set(cluster.nodes) - set(answering)),
              "airflow_nodes": cluster.airflow_nodes(), "states": pg_states}
    if refusal:
        return result
    if max_lag_bytes in (None, ""):
        max_lag_bytes = (cluster.pillar.get("failover") or {}).get("max_lag_bytes",
                                                                   MAX_LAG_BYTES)
    if action == "failover":
        new = cluster.other(old)
        # A server that answers while its PostgreSQL is not a running primary
        # (it crashed, or was stopped) is failed over as if it were down.
        old_up = old in pg_states and pg_states[old].get("role") == "primary"
        result.update(failover_decision(old, new, old_up, pg_states.get(new), force,
                                        last_primary_lsn, last_seen_at, int(max_lag_bytes)),
                      new=new, last_primary_lsn=last_primary_lsn, last_seen_at=last_seen_at)
    else:
        new = cluster.preferred
        result.update(failback_decision(old, new, answering, pg_states, switch_back,
                                        cluster.address(old)), new=new)
    return result

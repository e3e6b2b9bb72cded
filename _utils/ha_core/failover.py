"""
The runbooks' decisions and checks, from the states the nodes report
(``pg_replication.status``, ``redis_replication.status``): whether a
failover is planned or unplanned and whether it may run, what a failback
does, whether a switch lost nothing, and what is wrong with the cluster
against the topology record. Nodes are named by minion id.
"""

import json

from ha_core.cluster import generation as generation_of
from ha_core.pg_facts import lag_bytes, parse_lsn

# A forced failover refuses when more WAL than this is known to be missing
# on the standby (pillar failover:max_lag_bytes overrides it).
MAX_LAG_BYTES = 16 * 1024 ** 2
# ... or when Redis on the candidate is known to miss more than this of its
# master's replication stream (pillar failover:max_redis_lag_bytes).
MAX_REDIS_LAG_BYTES = 1024 ** 2


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
                "at_risk": None, "lag_bytes": None, "resumed": False}
    if candidate_state is None:
        decision["refused"] = (f"{candidate} does not answer: there is no standby to promote; "
                               "bring it back, then run the failover again")
        return decision
    if candidate_state.get("role") == "primary" and not current_up:
        # An earlier forced run promoted it, then failed: this run finishes
        # that run's switch; the loss was accepted then, nothing more is lost.
        decision["resumed"] = True
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


def switchover_blockers(candidate, primary_state, candidate_redis, max_lag_bytes):
    """
    Return why a planned switch to ``candidate`` must not start (empty:
    it may): its PostgreSQL must stream from the primary (``primary_state``,
    its pg_replication.status) no more than ``max_lag_bytes`` behind, and
    its Redis (``candidate_redis``, its redis_replication.status, None when
    unknown) must be a replica with its link up. Checked before anything
    changes, since a switch that stops the primary first cannot wait for a
    standby that is not there.
    """
    blockers = []
    entry = next((entry for entry in primary_state.get("standbys", [])
                  if entry["application_name"] == candidate), None)
    if entry is None or entry["state"] != "streaming":
        blockers.append(f"{candidate}'s PostgreSQL is not streaming from the primary "
                        f"({entry['state'] if entry else 'not connected'})")
    elif entry.get("lag_bytes") is not None and entry["lag_bytes"] > max_lag_bytes:
        blockers.append(f"{candidate}'s PostgreSQL is {entry['lag_bytes']} bytes behind "
                        f"(more than failover:max_lag_bytes, {max_lag_bytes})")
    if candidate_redis is None:
        blockers.append(f"{candidate}'s Redis does not answer")
    elif candidate_redis.get("role") != "replica" or candidate_redis.get(
            "master_link_status") != "up":
        blockers.append(f"{candidate}'s Redis is not a replica with its link up")
    elif (candidate_redis.get("lag_bytes") or 0) > max_lag_bytes:
        blockers.append(f"{candidate}'s Redis is {candidate_redis['lag_bytes']} bytes behind")
    return blockers


def cleanly_shut_down(state):
    """Whether PostgreSQL (its pg_replication.status) is stopped after a
    clean shutdown: its last checkpoint is then the end of its WAL."""
    return bool(state) and not state.get("running") and state.get("cluster_state") == "shut down"


def resume_decision(old, candidate, old_state, candidate_state, divergence=None):
    """
    Decide whether orch.failover may finish a planned switch that an earlier
    run began: ``old``, still the recorded primary, is cleanly shut down
    (``old_state``), so its last checkpoint is where its WAL ends. Returns
    ``{"mode": "resume", "refused": reason or None, "lag_bytes"}``; the
    planned steps then run again, each skipping what is done.

    candidate_state
        ``pg_replication.status`` of ``candidate`` (None: it does not answer).
    divergence
        When ``candidate`` was promoted already: what ``old`` holds past
        the fork (``pg_replication.divergence`` on ``old``).
    """
    decision = {"mode": "resume", "refused": None, "at_risk": None, "lag_bytes": None,
                "resumed": True}
    checkpoint = old_state["last_checkpoint_lsn"]
    role = (candidate_state or {}).get("role")
    if role == "primary":
        if divergence and divergence["discarded_bytes"]:
            decision["refused"] = (
                f"{candidate} was promoted, but {old} holds {divergence['discarded_bytes']} "
                f"bytes of WAL past the fork ({divergence['discarded_lsn_range']}): commits "
                f"{candidate} lacks. Nothing was changed. Check both with salt-run "
                f"airflow_ha.status; to keep {candidate} and discard them, run salt-run "
                "state.orchestrate orch.failback")
        return decision
    if role != "standby" or (candidate_state or {}).get("fenced"):
        decision["refused"] = (f"{old} is shut down, but {candidate} is "
                               f"{role or 'not answering'}, not a standby to promote. Nothing "
                               f"was changed. Bring {old} back as the primary with salt-run "
                               f"airflow_ha.unfence {old}, then check salt-run airflow_ha.status")
        return decision
    received = candidate_state.get("received_lsn")
    if not received_everything(checkpoint, received):
        decision["lag_bytes"] = lag_bytes(checkpoint, received) if received else None
        decision["refused"] = (
            f"{old} is shut down at its checkpoint {checkpoint}, and {candidate} has received "
            f"only up to {received or 'nothing'}: promoting it would lose what {old} committed "
            "since. Nothing was changed. Let it take writes again, so that its standby catches "
            f"up: salt-run airflow_ha.unfence {old}; then run the failover again")
    return decision


def finish_decision(record, old, new, old_state, new_state, new_answers):
    """
    Decide whether orch.failover finishes the run that wrote the topology
    ``record`` instead of starting a new switch. That run (its reason begins
    with orch.failover) made ``old`` the primary in place of ``new``; when it
    stopped after recording, Airflow may still name ``new``'s servers and
    ``new`` has not rejoined. Returns None when that run cannot be the one
    to finish (another writer of the record, ``old`` not the primary) or
    when ``new`` streams from ``old`` unfenced (it finished: a new switch may
    start), or follows ``old``'s timeline unfenced (it rejoined, then
    stopped streaming: a new fault, not a run to finish); else the plan's
    ``{"mode": "finish", "rejoin": new when it answers and the run did not
    fence it, else None, ...}``: Airflow follows, ``new`` rejoins, then
    verify; each step skips what is done.
    """
    reason = str((record or {}).get("reason", ""))
    if not reason.startswith("orch.failover") or record.get("previous_primary") != new:
        return None
    if (old_state or {}).get("role") != "primary":
        return None
    if rejoined(new, new_state, old_state) or on_the_timeline_of(new_state, old_state):
        return None
    # A forced run recorded the node it fenced: its data may have diverged,
    # so orch.failback rejoins it, with the operator's consent to any loss.
    rejoin = new_answers and new not in record.get("fenced", ())
    return {"mode": "finish", "new": old, "refused": None, "at_risk": None, "lag_bytes": None,
            "resumed": True, "rejoin": new if rejoin else None}


def signs_of_life(candidate, candidate_pg, candidate_redis):
    """
    What the candidate sees of a primary that may still run, whatever its
    minion says: its WAL receiver streaming, its Redis link up. Empty: no
    sign of life. (A standby notices a primary gone only after
    wal_receiver_timeout, so a sign may outlive a power-off by that long.)
    """
    signs = []
    if ((candidate_pg or {}).get("wal_receiver") or {}).get("status") == "streaming":
        signs.append(f"the WAL receiver on {candidate} is streaming from it")
    if (candidate_redis or {}).get("master_link_status") == "up":
        signs.append(f"Redis on {candidate} has its link to it up")
    return signs


def fence_method(old, old_answers, agent, named, signs):
    """
    Decide how an unplanned failover proves that ``old`` takes no writes
    before anything is promoted: returns ``(method, refusal)``. The method
    is "minion" (its minion answers: it fences its own servers), "operator"
    (``named``, the operator's word that ``old`` is powered off or cut off
    from every client, which no sign of life contradicts), or "agent"
    (``agent``, the command pillar failover:fence names, powers it off);
    the refusal says why none applies and what to run.
    """
    if old_answers:
        return "minion", None
    if named and named != old:
        return None, (f"fenced names {named}, but the primary to fail over from is {old}. "
                      "Nothing was changed")
    alive = "; ".join(signs)
    if named:
        if signs:
            return None, (
                f"{old} was named fenced, but it runs: {alive}. Nothing was changed. Power it "
                "off, or stop its PostgreSQL and Redis, wait until the sign is gone (a standby "
                "notices a lost primary within wal_receiver_timeout), then run the failover again")
        return "operator", None
    if agent:
        return "agent", None
    return None, (
        f"{old} does not answer, and nothing proves that it takes no writes"
        f"{': ' + alive if signs else ''}. Promoting now could leave two writable primaries. "
        "Nothing was changed. Configure a fence agent (pillar failover:fence, see the README), "
        f"or power {old} off (or cut it off from every client, its own Airflow included) and "
        "say so: salt-run state.orchestrate orch.failover "
        f"pillar='{{\"force\": true, \"fenced\": \"{old}\"}}'")


def redis_handover_possible(old_redis, candidate_redis):
    """Whether Redis can move by handover (FAILOVER, nothing lost): the old
    master answers as a master and the candidate's link to it is up."""
    return ((old_redis or {}).get("role") == "master"
            and (candidate_redis or {}).get("master_link_status") == "up")


def redis_loss(candidate, candidate_redis, master_offset, handover_possible, max_redis_lag_bytes):
    """
    What a forced promotion of Redis on ``candidate`` loses: returns
    ``(lag_bytes or None, refusal or None)``. Nothing when its master
    answers and can hand over (``handover_possible``); else the master's
    last known replication offset (``master_offset``: live, or from the
    Salt mine) less what the candidate processed, refused beyond
    ``max_redis_lag_bytes``.
    """
    if handover_possible:
        return 0, None
    state = candidate_redis or {}
    if state.get("role") == "master":
        return 0, None
    if state.get("role") != "replica":
        return None, (f"Redis on {candidate} does not answer as a replica: there is no broker "
                      "to promote. Nothing was changed")
    processed = state.get("replica_repl_offset")
    if master_offset is None or processed is None:
        return None, None
    lag = max(int(master_offset) - int(processed), 0)
    if lag > max_redis_lag_bytes:
        return lag, (
            f"Redis on {candidate} is {lag} bytes behind its master's last known offset "
            f"{master_offset}, more than failover:max_redis_lag_bytes ({max_redis_lag_bytes}): "
            "promoting it would lose those broker writes (queued tasks, results). Nothing was "
            "changed. Bring the master back if at all possible; to accept the loss, raise the "
            f"bound for this run: pillar='{{\"force\": true, \"max_redis_lag_bytes\": {lag}}}'")
    return lag, None


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
        # An earlier failback switched back, then failed to rejoin the other;
        # or the other is a former primary its start guard fenced.
        decision["mode"] = "nothing"
        for node in sorted(set(pg_states) - {old}):
            if pg_states.get(old, {}).get("role") == "primary" and not rejoined(
                    node, pg_states[node], pg_states[old]):
                decision.update(mode="rejoin-only", rejoin=node)
    elif new not in answering:
        decision["refused"] = (f"{new}, the preferred primary, does not answer: start it "
                               "(its PostgreSQL comes up fenced), then run the failback again")
    elif old not in pg_states or pg_states[old].get("role") != "primary":
        decision["refused"] = (f"{old}, the current primary, is not a running primary: "
                               "fail over to it first, or check salt-run airflow_ha.status")
    elif (pg_states.get(new) or {}).get("role") == "primary":
        decision["refused"] = (
            f"split brain: {new} and {old} are both writable PostgreSQL primaries. Nothing was "
            f"changed. Stop writes to {new} (salt {new} pg_replication.fence), see what it "
            f"holds that {old} lacks (salt {new} pg_replication.divergence "
            f"primary=ADDRESS-OF-{old}), then run the failback again")
    else:
        following = (pg_states[new].get("standby_of") or {}).get("host")
        if not streams_from(new, pg_states[new], pg_states[old]) or following not in (
                old, old_address):
            decision["rejoin"] = new
        decision["mode"] = "planned" if switch_back else "rejoin-only"
    return decision


def rejoin_refusal(node, divergence, discard, switch_back=True):
    """
    Why the failback must not rejoin ``node`` (``divergence``: its
    ``pg_replication.divergence``) without the operator's consent, or None:
    rejoining it discards the WAL it holds past the fork, and ``discard``
    must name exactly that range. The command it names keeps the
    operator's ``switch_back``.
    """
    if not divergence["discarded_bytes"] or discard == divergence["discarded_lsn_range"]:
        return None
    consent = {"discard": divergence["discarded_lsn_range"]}
    if not switch_back:
        consent["switch_back"] = False
    return (f"rejoining {node} would discard {divergence['discarded_bytes']} bytes of its WAL, "
            f"{divergence['discarded_lsn_range']}, past {divergence['fork_lsn']} where its "
            "history and the primary's part: commits it acknowledged that the primary lacks "
            "(a copy is kept beside its data directory). Nothing was changed. To accept, run "
            f"salt-run state.orchestrate orch.failback pillar='{json.dumps(consent)}'")


def streams_from(node, state, primary_state):
    """Whether ``node`` (its status ``state``) is a standby that the primary
    (its status ``primary_state``) shows streaming."""
    streaming = {entry["application_name"] for entry in primary_state.get("standbys", [])
                 if entry["state"] == "streaming"}
    return state.get("role") == "standby" and node in streaming


def on_the_timeline_of(state, primary_state):
    """Whether an unfenced standby follows the primary's timeline: it
    rejoined after the promotion that began that timeline (a former primary
    that has not is still on the timeline before it), so the run that
    promoted has finished even if the standby stopped streaming since."""
    timeline = int((primary_state or {}).get("timeline") or 0)
    return (bool(state) and state.get("role") == "standby" and not state.get("fenced")
            and timeline > 0 and int(state.get("timeline") or 0) >= timeline)


def rejoined(node, state, primary_state):
    """Whether ``node`` is a standby of the primary as a rejoin leaves it:
    streaming, and not fenced (a fenced former primary streams too, after
    its start guard, and no failover may promote it until it rejoins)."""
    return bool(state) and not state.get("fenced") and streams_from(node, state, primary_state)


def unfence_decision(master_record, copies, pg_states, node=None):
    """
    Decide which node may take writes after start guards fenced: the one
    the newest topology record names (the master's, or a database node's
    copy), provided it answers and no answering node is on a later
    timeline. Returns ``{"writer", "generation", "refused"}``.

    copies
        ``{node: its copy of the record, or None}``.
    pg_states
        ``{node: pg_replication.status}`` of the answering database nodes.
    node
        The node the operator expects; refused when it is not the writer.
    """
    records = [record for record in [master_record, *copies.values()] if record]
    decision = {"writer": None, "generation": None, "refused": None}
    if not records:
        decision["refused"] = ("no topology record anywhere, neither on the master nor on a "
                               "database node: record the writer with salt-run "
                               "airflow_ha.record_primary NODE reason=...")
        return decision
    newest = max(generation_of(record) for record in records)
    named = sorted({record["primary"] for record in records if generation_of(record) == newest})
    if len(named) > 1:
        decision["refused"] = (f"records of generation {newest} name {', '.join(named)}: "
                               "check each node's data (salt-run airflow_ha.status), then "
                               "record the writer: salt-run airflow_ha.record_primary NODE")
        return decision
    writer = named[0]
    decision.update(writer=writer, generation=newest)
    if writer not in pg_states:
        decision["refused"] = (f"{writer}, which the newest record (generation {newest}) names, "
                               "does not answer: start it, then run this again")
        return decision
    later = sorted(name for name, state in pg_states.items()
                   if int(state.get("timeline") or 0) > int(pg_states[writer].get("timeline") or 0))
    if later:
        decision["refused"] = (f"{', '.join(later)} is on a later timeline than {writer}: it was "
                               "promoted after the newest record; check both, then record the "
                               "writer: salt-run airflow_ha.record_primary NODE")
    elif node and node != writer:
        decision["refused"] = (f"{node} is not the writer: the newest record (generation "
                               f"{newest}) names {writer}")
    return decision


def topology_problems(recorded, pg_states, redis_states, down, recorded_address=None,
                      fenced=()):
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
        Database nodes that did not answer: each is a problem (it may still
        take writes) unless it is in ``fenced``, the nodes the record says a
        run proved fenced.
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
        if node in fenced and pg_states[node].get("fenced"):
            continue  # the former primary a forced run fenced: orch.failback rejoins it
        if not streams_from(node, pg_states[node], pg_states.get(recorded, {})):
            problems.append(f"PostgreSQL on {node} is {pg_states[node].get('role')}, not a standby "
                            f"streaming from {recorded}")
    for node in sorted(pg_states):
        reason = (pg_states[node].get("fence") or {}).get("reason", "")
        if node == recorded and reason.startswith("start guard:"):
            problems.append(f"PostgreSQL on {node}, the recorded primary, was fenced by its "
                            f"start guard ({reason[len('start guard: '):]}); when the cluster "
                            "is known, run salt-run airflow_ha.unfence")
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
        elif node not in fenced:
            problems.append(f"{node} does not answer and is not known fenced: it may still take "
                            f"writes; check it, or power it off")
    return problems


def airflow_health_problems(body):
    """
    Return what is unhealthy in the JSON body of Airflow's health endpoint
    (which answers HTTP 200 either way), as a list (empty: healthy): the
    database, the schedulers, and the DAG processor once it has run (Airflow
    3's; Airflow 2's runs inside the scheduler and reports no status).
    """
    if "error" in body:
        return [f"no answer ({body['error']})"]
    statuses = {part: (body.get(part) or {}).get("status") for part in ("metadatabase", "scheduler")}
    dag_processor = (body.get("dag_processor") or {}).get("status")
    if dag_processor is not None:
        statuses["dag_processor"] = dag_processor
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
         max_lag_bytes=None, last_primary_lsn=None, last_seen_at=None, refusal=None,
         redis_states=None, divergence_of=None, discard=None, fenced=None,
         last_redis_offset=None, max_redis_lag_bytes=None):
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
    redis_states
        ``{node: redis_replication.status}`` of the answering Redis nodes
        (a planned switch is refused when the candidate's is not following).
    divergence_of, discard
        ``divergence_of(node, primary)`` asks a node what rejoining it to
        the primary would discard; ``discard`` is the operator's consent to
        that range (``pillar='{"discard": "X/Y-X/Y"}'``).
    fenced
        The node the operator says is powered off or cut off
        (``pillar='{"force": true, "fenced": NODE}'``).
    last_redis_offset, max_redis_lag_bytes
        The old Redis master's last replication offset in the Salt mine,
        and the bound of a forced Redis promotion (None or "": pillar
        ``failover:max_redis_lag_bytes``, or MAX_REDIS_LAG_BYTES).
    """
    old = cluster.primary
    result = {"action": action, "old": old, "new": None, "rejoin": None, "refused": refusal,
              "at_risk": None, "mode": None, "force": bool(force), "divergence": None,
              "discard": None,
              "down": sorted(set(cluster.nodes) - set(answering)),
              "airflow_nodes": cluster.airflow_nodes(), "states": pg_states}
    if refusal:
        return result
    settings = cluster.pillar.get("failover") or {}
    if max_lag_bytes in (None, ""):
        max_lag_bytes = settings.get("max_lag_bytes", MAX_LAG_BYTES)
    if max_redis_lag_bytes in (None, ""):
        max_redis_lag_bytes = settings.get("max_redis_lag_bytes", MAX_REDIS_LAG_BYTES)
    if action == "failover":
        result.update(_failover_plan(cluster, answering, pg_states, redis_states or {}, force,
                                     int(max_lag_bytes), last_primary_lsn, last_seen_at,
                                     divergence_of, fenced, last_redis_offset,
                                     int(max_redis_lag_bytes)))
    else:
        new = cluster.preferred
        result.update(failback_decision(old, new, answering, pg_states, switch_back,
                                        cluster.address(old)), new=new)
        if result["rejoin"] and not result["refused"] and divergence_of:
            result["divergence"] = divergence_of(result["rejoin"], old)
            result["discard"] = result["divergence"]["discarded_lsn_range"]
            result["refused"] = rejoin_refusal(result["rejoin"], result["divergence"], discard,
                                               switch_back)
    return result


def _failover_plan(cluster, answering, pg_states, redis_states, force, max_lag_bytes,
                   last_primary_lsn, last_seen_at, divergence_of, fenced, last_redis_offset,
                   max_redis_lag_bytes):
    """plan()'s decision for orch.failover: finish (an earlier run recorded
    the switch, then stopped), planned (the primary runs), resume (an
    earlier run shut it down cleanly), or unplanned (forced, fenced
    first)."""
    old = cluster.primary
    new = cluster.other(old)
    old_state, new_state = pg_states.get(old), pg_states.get(new)
    result = {"new": new, "last_primary_lsn": last_primary_lsn, "last_seen_at": last_seen_at,
              "fence": None, "signs_of_life": [], "redis_lag_bytes": None}
    finish = finish_decision(cluster.pillar.get("topology"), old, new, old_state, new_state,
                             new in answering)
    if finish:
        result.update(finish)
        return result
    if (old_state or {}).get("role") == "primary":
        result.update(failover_decision(old, new, True, new_state, force))
        blockers = ([] if result["refused"] else
                    switchover_blockers(new, old_state, redis_states.get(new), max_lag_bytes))
        if blockers:
            result["refused"] = (f"planned switch to {new} refused before changing anything: "
                                 f"{'; '.join(blockers)}. Check salt-run airflow_ha.status; "
                                 "when it streams again, run the failover again")
        return result
    if cleanly_shut_down(old_state):
        divergence = (divergence_of(old, new) if divergence_of and
                      (new_state or {}).get("role") == "primary" else None)
        result.update(resume_decision(old, new, old_state, new_state, divergence))
        return result
    result.update(failover_decision(old, new, False, new_state, force, last_primary_lsn,
                                    last_seen_at, max_lag_bytes))
    if result["refused"]:
        return result
    result["signs_of_life"] = signs_of_life(new, new_state, redis_states.get(new))
    result["fence"], result["refused"] = fence_method(
        old, old in answering, fence_agent(cluster), fenced, result["signs_of_life"])
    if result["refused"]:
        return result
    old_redis = redis_states.get(old) or {}
    handover = redis_handover_possible(old_redis, redis_states.get(new))
    master_offset = (old_redis.get("master_repl_offset") if old_redis.get("role") == "master"
                     else last_redis_offset)
    result["redis_lag_bytes"], result["refused"] = redis_loss(
        new, redis_states.get(new), master_offset, handover, max_redis_lag_bytes)
    return result


def fence_agent(cluster):
    """The fence agent's command (pillar failover:fence), or None."""
    return (cluster.pillar.get("failover") or {}).get("fence") or None

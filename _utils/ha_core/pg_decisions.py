"""
What to make of a PostgreSQL node's facts: its role, whether it may be
promoted, how it rejoins a primary and what that discards, what the standby
state does with it and what the role state changes. Facts in, decision out:
the callers read the facts (``pg_facts``, the servers) and carry the
decisions out.
"""

import re

from ha_core import addresses, pg_commands, pg_facts
from ha_core.errors import InvalidInput, Refused


def server_role(running, cluster_state, standby_signal):
    """
    Return "primary", "standby" or "stopped". The control file tells a running
    server's role once recovery has begun or ended; while the server is still
    starting (or stopping), standby.signal tells what it comes up as.
    """
    if not running:
        return "stopped"
    if cluster_state == "in production":
        return "primary"
    if cluster_state == "in archive recovery":
        return "standby"
    return "standby" if standby_signal else "primary"


def promotion_blockers(
    role, fenced, primary_reachable, lag_bytes, max_lag_bytes=None, force=False
):
    """
    Return why promoting this node now would be unsafe, as a list of reasons
    (empty when it is safe).

    role
        This node's role from status(); only a running standby can be promoted,
        forced or not.
    fenced
        Whether this node carries a fence marker.
    primary_reachable
        Whether the primary still answers.
    lag_bytes
        How many bytes of WAL the primary has that this node has not received,
        or None when unknown.
    max_lag_bytes
        The most WAL that may be lost when the primary is unreachable; None
        skips the check.
    force
        Promote despite a fence or lag.
    """
    if role != "standby":
        return [f"it is {role}, not a running standby"]
    if force:
        return []
    blockers = []
    if fenced:
        blockers.append("it is fenced; rejoin it to the primary first, or force")
    if max_lag_bytes is not None and not primary_reachable:
        if lag_bytes is None:
            blockers.append(
                "the primary is unreachable and the standby's lag is unknown; "
                "give the primary's last known LSN, or force"
            )
        elif lag_bytes > max_lag_bytes:
            blockers.append(
                f"the primary is unreachable and the standby is {lag_bytes} bytes of WAL "
                f"behind (more than {max_lag_bytes}): promoting would lose them; force to accept"
            )
    return blockers


def choose_rejoin_method(
    same_cluster, local_timeline, local_last_lsn, primary_timelines, rewind_possible
):
    """
    Return how a stopped node becomes a standby of a primary: "none" (its WAL
    is part of the primary's history: configure it and start it), "rewind"
    (pg_rewind) or "basebackup" (copy the primary). From the node's last
    record alone; divergence, which pg_replication.rejoin follows, also tells
    what the rewind or base backup discards.

    same_cluster
        Whether both have the same database system identifier.
    local_timeline, local_last_lsn
        The timeline and LSN of the node's last WAL record (its shutdown
        checkpoint), or local_last_lsn None when unknown (the node crashed or was
        in recovery).
    primary_timelines
        The primary's timelines, oldest first, as ``(timeline, end_lsn)``: the
        entries of its timeline history (where it left each one) followed by
        its current timeline and current WAL position.
    rewind_possible
        Whether the node has wal_log_hints on or data checksums.
    """
    if not same_cluster:
        return "basebackup"
    timeline_ends = dict(primary_timelines)
    # The primary leaves a timeline at a record boundary: a last record that
    # starts before it also ends before it, so all the node's WAL is shared.
    if (
        local_last_lsn is not None
        and local_timeline in timeline_ends
        and local_last_lsn < timeline_ends[local_timeline]
    ):
        return "none"
    return "rewind" if rewind_possible else "basebackup"


def rewind_possible(control):
    """
    Whether pg_rewind can rewind the node whose pg_controldata values are
    ``control``: it has wal_log_hints on or data checksums.
    """
    return (control.get("wal_log_hints setting") == "on"
            or control.get("Data page checksum version", "0") != "0")


def rejoin_method(control, primary_identity, primary_timelines):
    """
    Return choose_rejoin_method's answer for a stopped node whose
    pg_controldata values are ``control`` (pg_facts.parse_controldata), and a
    primary with ``primary_identity`` (pg_facts.parse_identify_system) and
    ``primary_timelines``.
    """
    # Only after a clean shutdown is the latest checkpoint the last record.
    cleanly_shut_down = control["Database cluster state"] == "shut down"
    return choose_rejoin_method(
        same_cluster=control["Database system identifier"] == primary_identity["system_identifier"],
        local_timeline=int(control["Latest checkpoint's TimeLineID"]),
        local_last_lsn=(pg_facts.parse_lsn(control["Latest checkpoint location"])
                        if cleanly_shut_down else None),
        primary_timelines=primary_timelines,
        rewind_possible=rewind_possible(control),
    )


def _fork(local_path, primary_path):
    """
    Return ``(timeline, lsn)`` where two timeline paths part, each a list of
    ``(timeline, end_lsn)``, oldest first: the last timeline both share, with
    the same beginning, and the end of what both have of it (as pg_rewind
    finds it); None when they share none.
    """
    fork = None
    local_begin = primary_begin = 0
    for (timeline, local_end), (primary_timeline, primary_end) in zip(local_path, primary_path):
        if timeline != primary_timeline or local_begin != primary_begin:
            break
        fork = timeline, min(local_end, primary_end)
        local_begin, primary_begin = local_end, primary_end
    return fork


def divergence(same_cluster, local_timeline, local_end_lsn, local_history, primary_timelines,
               rewind_possible):
    """
    Return what rejoining a node to a primary discards, and how it rejoins,
    as pg_replication.divergence returns it:

    - ``method``: "none" (all its WAL is part of the primary's history),
      "rewind" or "basebackup" (another cluster, or rewinding is impossible);
    - ``same_cluster``, ``timeline`` (the node's), ``primary_timeline``;
    - ``fork_timeline`` and ``fork_lsn``: the last timeline both histories
      share, and the end of what both have of it: where the primary's history
      left the node's (walking back from the node's timeline through its
      history when the primary never had that timeline);
    - ``local_end_lsn``: the end of the node's WAL;
    - ``discarded_lsn_range`` (``"X/Y-X/Y"``, from the fork to the end of the
      node's WAL: what it holds that the primary does not, which a rewind or a
      base backup discards; None when empty) and ``discarded_bytes``.

    LSNs come back as ``"X/Y"``. A node of another cluster shares no history:
    no fork, nothing counted as discarded, and a base backup replaces it.

    same_cluster
        Whether both have the same database system identifier.
    local_timeline, local_end_lsn
        The node's newest timeline and where its WAL ends on it, the position
        after its last record (an integer; may be None for another cluster).
    local_history
        The entries of the node's history file for ``local_timeline``
        (pg_facts.parse_timeline_history): where it left each earlier
        timeline; [] on timeline 1, None when that file is missing.
    primary_timelines
        The primary's timelines, oldest first, as choose_rejoin_method takes
        them (pg_facts.primary_timelines).
    rewind_possible
        Whether the node has wal_log_hints on or data checksums.
    """
    decided = {
        "method": "basebackup", "same_cluster": same_cluster, "timeline": local_timeline,
        "primary_timeline": primary_timelines[-1][0], "fork_timeline": None, "fork_lsn": None,
        "local_end_lsn": None if local_end_lsn is None else pg_facts.format_lsn(local_end_lsn),
        "discarded_lsn_range": None, "discarded_bytes": 0,
    }
    if not same_cluster:
        return decided
    if local_end_lsn is None:
        raise InvalidInput("where the node's WAL ends is unknown")
    if local_history is None and local_timeline == 1:
        local_history = []
    if local_history is None:
        # Without its history only the node's own timeline can be matched.
        primary_ends = dict(primary_timelines)
        fork = ((local_timeline, min(local_end_lsn, primary_ends[local_timeline]))
                if local_timeline in primary_ends else None)
    else:
        fork = _fork(list(local_history) + [(local_timeline, local_end_lsn)], primary_timelines)
    if fork is None:
        known = ", ".join(str(timeline) for timeline, _ in primary_timelines)
        missing = (f" and its history file {local_timeline:08X}.history is missing"
                   if local_history is None else "")
        raise InvalidInput(
            f"where this node's history parted from the primary's is unknown: its timeline "
            f"{local_timeline} is not among the primary's ({known}){missing}",
            fix="compare both nodes' timeline history files in pg_wal",
        )
    discarded = local_end_lsn - fork[1]
    decided.update(
        fork_timeline=fork[0], fork_lsn=pg_facts.format_lsn(fork[1]), discarded_bytes=discarded,
        discarded_lsn_range=(pg_facts.format_lsn_range(fork[1], local_end_lsn)
                             if discarded else None),
        method="none" if not discarded else "rewind" if rewind_possible else "basebackup",
    )
    return decided


def wal_files_to_keep(names, segment_size, start, end):
    """
    Return, sorted, the entries of a pg_wal directory to keep before the WAL
    from ``start`` to ``end`` (integers) is discarded: the segment files, also
    ``.partial`` ones, holding any of it, on whatever timeline, and every
    timeline history file.
    """
    kept = []
    for name in names:
        segment = name.removesuffix(".partial")
        if re.fullmatch(r"[0-9A-F]{24}", segment):
            first = pg_facts.wal_file_start(segment, segment_size)[1]
            if first < end and first + segment_size > start:
                kept.append(name)
        elif re.fullmatch(r"[0-9A-F]{8}\.history", name):
            kept.append(name)
    return sorted(kept)


def rejoin_refusal(node, minion_id, role, primary):
    """
    Return the Refused to raise when the node ``node`` (minion ``minion_id``)
    may not be rejoined to ``primary`` because it runs, as ``role``; None when
    it is stopped. A node running as a primary while another is the primary
    is a split brain: both take writes.
    """
    if role == "stopped":
        return None
    if role != "primary":
        return Refused(f"{node} is running as {role}", now="rejoin needs it stopped",
                       fix="stop or fence it first (pg_replication.fence)")
    return Refused(
        f"refusing to rejoin {node} to {primary}: {node} is running as a writable primary",
        now=(f"split brain: {node} and {primary} are both writable primaries, and rejoining "
             f"would discard what {node} wrote since their histories parted"),
        fix=(f"decide whose writes to keep; to keep {primary}'s, stop {node} taking writes "
             f"(`salt {minion_id} pg_replication.fence reason='split brain'`), see what it "
             f"would discard (`salt {minion_id} pg_replication.divergence primary={primary}`), "
             f"then rejoin it (`salt {minion_id} pg_replication.rejoin primary={primary}`, "
             f"which asks for consent to discard it)"),
    )


def discard_refusal(node, minion_id, primary, divergence, discard=None):
    """
    Return the Refused to raise when rejoining the node ``node`` (minion
    ``minion_id``) to ``primary`` would discard WAL (``divergence`` as
    divergence() returns it) without the operator's consent, or None: there
    is nothing to discard, or ``discard`` is exactly the range it would
    discard, so that a consent given for one range is none for another.
    """
    wanted = divergence["discarded_lsn_range"]
    if not divergence["discarded_bytes"] or (discard is not None and str(discard) == wanted):
        return None
    size = divergence["discarded_bytes"]
    past = (f"{node}'s WAL past {divergence['fork_lsn']}, where its history and that of "
            f"{primary} part (on timeline {divergence['fork_timeline']})")
    method = divergence["method"]
    if discard is None:
        what = (f"refusing to rejoin {node} to {primary} by {method}: it would discard "
                f"{wanted}, {size} bytes of {past}")
    else:
        what = (f"refusing to rejoin {node} to {primary} by {method}: discard={discard} is not "
                f"what it would discard, {wanted}, {size} bytes of {past}")
    keeping = ("a copy of that WAL" if method == "rewind" else "the data directory it replaces")
    return Refused(
        what,
        now="nothing was changed",
        fix=(f"to discard them, keeping {keeping} beside the data directory, run "
             f"`salt {minion_id} pg_replication.rejoin primary={primary} discard={wanted}`"),
    )


def standby_action(status, primary, holds_database, primary_address=None):
    """
    Decide what the standby state does with this node, from its
    ``pg_replication.status``: ``("keep", why)``, ``("build", why)`` or
    ``("refuse", why)``. ``primary`` is the primary's node name and
    ``primary_address`` its address (InvalidInput when either is not an
    address): a standby following either one follows the primary. Without
    a port, they are taken at the port the node follows.
    """
    following = status.get("standby_of") or {}
    followed = following.get("host"), following.get("port") or pg_facts.DEFAULT_PORT
    designations = {addresses.parse(host, default_port=followed[1])
                    for host in (primary, primary_address) if host}
    if followed in designations and status.get("role") == "standby":
        return "keep", f"already a standby of {primary}"
    if followed in designations and not status.get("fenced"):
        # Configured, but not running (an earlier attempt failed to start it).
        return "build", f"a standby of {primary}, but {status.get('role')}"
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
        where = following["host"]
        if following.get("port"):
            where = addresses.join(where, following["port"])
        return "build", f"follows {where}, not {primary}"
    return "build", "not a standby yet"


def role_changes(current, name, password, replication=False, member_of=(),
                 rewind_source=False):
    """
    Return the SQL statements that make the login role ``name`` as configured,
    and the changes they make, as ``(statements, changes)``; both empty when
    it is. ``changes`` never holds the password, only that it changed.

    current
        The role as it is (``replication``, ``login``, ``verifier``,
        ``member_of``, ``rewind_grants``: function to granted), or None when
        it does not exist.
    password
        Stored as a SCRAM-SHA-256 verifier; set again only when the current
        verifier is not this password's.
    rewind_source
        Grant the functions pg_rewind calls on its source server.
    """
    statements, changes = [], {}
    role = pg_commands.quote_ident(name)
    attributes = f"LOGIN {'REPLICATION' if replication else 'NOREPLICATION'}"
    password_literal = pg_commands.quote_literal(password)
    if current is None:
        statements.append(f"CREATE ROLE {role} {attributes} PASSWORD {password_literal};")
        changes["role"] = "created"
    else:
        if current["replication"] != replication or not current["login"]:
            statements.append(f"ALTER ROLE {role} {attributes};")
            changes["replication"] = replication
        if not pg_facts.scram_password_matches(current["verifier"], password):
            statements.append(f"ALTER ROLE {role} PASSWORD {password_literal};")
            changes["password"] = "changed"
    missing_groups = sorted(set(member_of) - set(current["member_of"] if current else []))
    for group in missing_groups:
        statements.append(f"GRANT {pg_commands.quote_ident(group)} TO {role};")
    if missing_groups:
        changes["member_of"] = missing_groups
    if rewind_source and (current is None or not all(current["rewind_grants"].values())):
        statements += [
            f"GRANT EXECUTE ON FUNCTION {function} TO {role};"
            for function in pg_facts.REWIND_FUNCTIONS
        ]
        changes["rewind_grants"] = "granted"
    return statements, changes

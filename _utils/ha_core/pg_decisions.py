"""
What to make of a PostgreSQL node's facts: its role, whether it may be
promoted, how it rejoins a primary, what the standby state does with it and
what the role state changes. Facts in, decision out: the callers read the
facts (``pg_facts``, the servers) and carry the decisions out.
"""

from ha_core import addresses, pg_commands, pg_facts


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
    (pg_rewind) or "basebackup" (copy the primary).

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
        rewind_possible=(control.get("wal_log_hints setting") == "on"
                         or control.get("Data page checksum version", "0") != "0"),
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

"""
What to make of Redis nodes' facts (``redis_facts``): whether and how a
replica is promoted, which ``FAILOVER`` makes its master hand over to it and
where that handover stands, and whether a node may follow another. Facts
in, decision out: the redis_replication module reads the facts from the
servers and carries the decisions out.
"""

import hashlib

from ha_core import redis_facts
from ha_core.errors import Refused, Unreachable


def promotion_method(local_status, master_address, master_error, force, master_role=None):
    """
    Decide how to promote this node, given its status (as
    ``redis_facts.status_from_info`` gives it): "failover" (its master
    answers: hand over without losing an acknowledged write) or "forced"
    (the master is unreachable, or is itself a replica, as start guards
    leave both nodes of a pair they fenced, and force is set). Raise Refused
    when this node must not be promoted.

    master_error is None when the master answered, else why it did not;
    master_role is the role it answered with ("master" or "slave").
    """
    if local_status["role"] == "master":
        raise Refused(
            "This node is already a master: there is nothing to promote",
            fix="run promote on the replica",
        )
    if master_error is None and master_role not in (None, "master") and force:
        return "forced"  # no master: nothing acknowledged since can be lost
    if master_error is None:
        if local_status["master_link_status"] != "up":
            raise Refused(
                f"The master {master_address} answers but this replica's link to it "
                "is down, so a handover cannot wait for it to catch up",
                fix="repair replication (redis_replication.replicate_from) and promote again",
            )
        return "failover"
    if force:
        return "forced"
    down = local_status["master_link_down_seconds"]
    raise Refused(
        f"The master {master_address} is unreachable ({master_error})",
        now=(
            f"this replica last processed offset {local_status['replica_repl_offset']}, "
            "its link to the master has been down "
            + (f"for {down} s" if down is not None else "since it started")
        ),
        fix=(
            "promote(force=True) promotes this replica anyway and may lose the writes "
            "the master acknowledged but had not yet replicated"
        ),
    )


def check_handover_source(master_address, master_info):
    """
    Refuse a handover from master_address, the node this replica follows,
    unless it is a master (master_info: its parsed INFO replication): only
    a master can hand its role over.
    """
    if master_info["role"] != "master":
        raise Refused(
            f"{master_address}, which this node follows, is itself a replica of "
            f"{master_info['master_host']}:{master_info['master_port']}",
            fix="promote a replica of the master instead",
        )


def failover_command(replicas, announce_host, port, timeout_ms):
    """
    Return (FAILOVER command to send to the master, address the master will
    follow once it has handed over) that makes this node, announce_host:port,
    the master; replicas are the master's connected replicas. Raise Refused
    when this node is not among them and FAILOVER could hand over to
    another node.
    """
    me = redis_facts.find_replica_entry(replicas, announce_host, port)
    if me is not None:
        return ["FAILOVER", "TO", me["ip"], me["port"], "TIMEOUT", timeout_ms], me["ip"]
    if len(replicas) == 1 and replicas[0]["port"] == port:
        # The master sees this node under another address (another
        # interface, NAT); with one replica, FAILOVER can only pick it.
        return ["FAILOVER", "TIMEOUT", timeout_ms], replicas[0]["ip"]
    listed = ", ".join(f"{replica['ip']}:{replica['port']}" for replica in replicas) or "none"
    raise Refused(
        f"This node ({announce_host}:{port}) is not among its master's connected "
        f"replicas ({listed})",
        fix="set redis_replication:announce_host to the address the master sees this node under",
    )


def handover_state(old_master_info, this_node_info, address_seen, port):
    """
    Return where a FAILOVER to this node stands, from the parsed INFO
    replication of the old master and of this node: "done" (this node is
    the master and the old master follows it at address_seen:port),
    "aborted" (the old master is still the master, with no failover under
    way) or "under way".
    """
    if this_node_info["role"] == "master" and redis_facts.follows(
        old_master_info, address_seen, port
    ):
        return "done"
    if (
        old_master_info["role"] == "master"
        and old_master_info["master_failover_state"] == "no-failover"
    ):
        return "aborted"
    return "under way"


def check_new_master(address, info, error):
    """
    Refuse to make this node follow the node at address unless it answered
    (error is None, else why it did not) and is a master (info: its parsed
    INFO replication): following a replica could leave no master at all.
    """
    if error is not None:
        raise Unreachable(f"Cannot reach {address} ({error})", now="this node was left unchanged")
    if info["role"] != "master":
        raise Refused(
            f"{address} is not a master (it follows {info['master_host']}:{info['master_port']})",
            fix=f"follow the master, or promote {address} first",
        )


# --- Password rotation ------------------------------------------------------------


def passwords_to_try(new, current):
    """
    The passwords this node's running Redis may accept while ``new`` is
    rolled out, in the order to try them: the new one (accepted already),
    the one its auth file holds now (``current``, None when there is no
    file yet), and none at all (a fresh server, as the package started it).
    """
    ordered = [new]
    if current and current != new:
        ordered.append(current)
    ordered.append(None)
    return ordered


def passwords_to_retire(password_hashes, password):
    """
    How many of a user's passwords (``ACL GETUSER``'s SHA-256 hex digests)
    are not ``password``: the old ones a rotation leaves accepted until it
    retires them.
    """
    keep = hashlib.sha256(password.encode()).hexdigest()
    return sum(1 for digest in password_hashes if digest != keep)

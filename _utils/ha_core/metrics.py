"""
A database server's replication state as Prometheus metrics: what
``pg_replication.status`` and ``redis_replication.status`` report, and the
server's copy of the topology record, in the text format that the node
exporter's textfile collector reads.

Every metric is a gauge named ``airflow_ha_...``; the scrape adds the
node's ``instance``. A warm standby answers no SQL, so its side of the
replication is what its files and processes show (received and replayed
LSN, its WAL receiver); lag in bytes between the two servers is then a
difference of two series: the primary's current LSN minus the standby's
received LSN.
"""

from ha_core.pg_facts import parse_lsn

PREFIX = "airflow_ha_"
PG_ROLES = ("primary", "standby", "stopped")

HELP = {
    "collected_timestamp_seconds": "When this server's replication state was collected (Unix time).",
    "postgresql_collected": "1 when pg_replication.status answered on this server.",
    "postgresql_running": "1 when PostgreSQL runs on this server.",
    "postgresql_role": "1 for this server's PostgreSQL role (primary, standby or stopped).",
    "postgresql_writable": "1 when this server's PostgreSQL runs as a primary and is not fenced.",
    "postgresql_fenced": "1 when this server's PostgreSQL carries a fence marker.",
    "postgresql_timeline": "The timeline of this server's PostgreSQL.",
    "postgresql_current_lsn_bytes": "A primary's current WAL position, in bytes.",
    "postgresql_standby_streaming": "1 when the primary sees this standby streaming.",
    "postgresql_standby_lag_bytes": "Bytes of WAL the standby has not replayed, seen by the primary.",
    "postgresql_standby_lag_seconds": "Seconds of replay lag of the standby, seen by the primary.",
    "postgresql_slot_active": "1 when the replication slot is in use.",
    "postgresql_wal_receiver_streaming": "1 when this standby's WAL receiver is streaming.",
    "postgresql_received_lsn_bytes": "The WAL position this standby has received, in bytes.",
    "postgresql_replayed_lsn_bytes": "The WAL position this standby has replayed (a lower bound).",
    "redis_collected": "1 when redis_replication.status answered on this server.",
    "redis_master": "1 when this server's Redis is a master.",
    "redis_connected_replicas": "The replicas connected to this Redis master.",
    "redis_replica_lag_bytes": "Bytes of the replication stream the replica has not acknowledged.",
    "redis_link_up": "1 when this Redis replica's link to its master is up.",
    "redis_link_down_seconds": "Seconds since this Redis replica's link to its master went down.",
    "redis_lag_bytes": "Bytes this Redis replica is behind its master.",
    "redis_role_file_agrees": "1 when the role Redis takes at restart is the role it has.",
    "topology_generation": "The generation of this server's copy of the topology record.",
    "topology_recorded_primary": "1 when this server's copy of the topology record names it primary.",
}


def postgresql_samples(state):
    """[(name, labels, value)] of ``pg_replication.status``; None (it did not
    answer) gives only ``postgresql_collected`` 0."""
    if state is None:
        return [("postgresql_collected", {}, 0)]
    role = state.get("role")
    samples = [("postgresql_collected", {}, 1),
               ("postgresql_running", {}, state.get("running")),
               *[("postgresql_role", {"role": name}, role == name) for name in PG_ROLES],
               ("postgresql_writable", {}, bool(state.get("running")) and role == "primary"
                and not state.get("fenced")),
               ("postgresql_fenced", {}, state.get("fenced"))]
    if state.get("timeline"):
        samples.append(("postgresql_timeline", {}, int(state["timeline"])))
    if role == "primary":
        if state.get("current_lsn"):
            samples.append(("postgresql_current_lsn_bytes", {}, parse_lsn(state["current_lsn"])))
        for standby in state.get("standbys") or []:
            labels = {"standby": standby["application_name"]}
            samples.append(("postgresql_standby_streaming", labels,
                            standby["state"] == "streaming"))
            for key in ("lag_bytes", "lag_seconds"):
                if standby.get(key) is not None:
                    samples.append((f"postgresql_standby_{key}", labels, standby[key]))
        for slot in state.get("slots") or []:
            samples.append(("postgresql_slot_active", {"slot": slot["slot_name"]},
                            slot["active"]))
    elif role == "standby":
        receiver = state.get("wal_receiver") or {}
        samples.append(("postgresql_wal_receiver_streaming", {},
                        receiver.get("status") == "streaming"))
        for key in ("received_lsn", "replayed_lsn"):
            if state.get(key):
                samples.append((f"postgresql_{key}_bytes", {}, parse_lsn(state[key])))
    return samples


def redis_samples(state):
    """[(name, labels, value)] of ``redis_replication.status``; None (it did
    not answer) gives only ``redis_collected`` 0."""
    if state is None:
        return [("redis_collected", {}, 0)]
    master = state.get("role") == "master"
    samples = [("redis_collected", {}, 1), ("redis_master", {}, master),
               ("redis_role_file_agrees", {}, state.get("role_file_agrees"))]
    if master:
        replicas = state.get("connected_replicas") or []
        samples.append(("redis_connected_replicas", {}, len(replicas)))
        for replica in replicas:
            if replica.get("lag_bytes") is not None:
                samples.append(("redis_replica_lag_bytes", {"replica": replica["ip"]},
                                replica["lag_bytes"]))
    else:
        samples.append(("redis_link_up", {}, state.get("master_link_status") == "up"))
        if state.get("master_link_down_seconds") is not None:
            samples.append(("redis_link_down_seconds", {}, state["master_link_down_seconds"]))
        if state.get("lag_bytes") is not None:
            samples.append(("redis_lag_bytes", {}, state["lag_bytes"]))
    return samples


def record_samples(node, record):
    """[(name, labels, value)] of the server's copy of the topology record
    (None: no copy)."""
    if not record:
        return []
    return [("topology_generation", {}, int(record.get("generation") or 0)),
            ("topology_recorded_primary", {"primary": str(record.get("primary"))},
             record.get("primary") == node)]


def server_samples(node, pg_state, redis_state, record, now):
    """Every sample of one database server ``node`` (its minion id), collected
    at ``now`` (Unix time)."""
    return [("collected_timestamp_seconds", {}, round(now, 3)),
            *postgresql_samples(pg_state), *redis_samples(redis_state),
            *record_samples(node, record)]


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if isinstance(value, bool) or value is None:
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(int(value))


def exposition(samples):
    """The samples in Prometheus' text exposition format: each metric's HELP
    and TYPE once, then its series, in the order first seen."""
    names = list(dict.fromkeys(name for name, _, _ in samples))
    lines = []
    for name in names:
        lines += [f"# HELP {PREFIX}{name} {HELP[name]}", f"# TYPE {PREFIX}{name} gauge"]
        for _, labels, value in (sample for sample in samples if sample[0] == name):
            text = ",".join(f'{key}="{_label_value(val)}"' for key, val in labels.items())
            lines.append(f"{PREFIX}{name}{{{text}}} {_number(value)}" if text
                         else f"{PREFIX}{name} {_number(value)}")
    return "\n".join(lines) + "\n"

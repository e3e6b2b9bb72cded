"""
The cluster's status as ``salt-run airflow_ha.status`` prints it: one row per
server, then the topology record, Airflow's health and the problems.
"""

from ha_core.backups import BACKUP_TYPES
from ha_core.failover import airflow_health_problems

_COLUMNS = ("node", "postgresql", "timeline", "lag", "redis", "offset")


def status_table(rows, record, airflow):
    """
    Return the rows (dicts keyed by column), the record line and the Airflow
    line as a text table with aligned columns.
    """
    lines = [_COLUMNS] + [tuple(str(row[key]) for key in _COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines]
    text.append("")
    text.append(f"topology record: {record}")
    text.append(f"airflow: {airflow}")
    return "\n".join(text)


def pg_cell(state):
    """The postgresql, timeline and lag cells of a pg_replication.status."""
    if state is None:
        return "no answer", "-", "-"
    role = state.get("role", "?")
    if state.get("fenced"):
        role += " (fenced)"
    lag = "-"
    if role == "standby":
        receiver = state.get("wal_receiver") or {}
        role += f" ({receiver.get('status', 'not receiving')})"
        lag = state.get("lag_bytes", "-")
    return role, state.get("timeline", "-"), lag


def redis_cell(state):
    """The redis and offset cells of a redis_replication.status."""
    if state is None:
        return "no answer", "-"
    if state.get("role") == "master":
        return "master", state.get("master_repl_offset")
    return (f"replica ({state.get('master_link_status')})",
            f"{state.get('replica_repl_offset')} (lag {state.get('lag_bytes')})")


def add_standby_lag(pg_states):
    """Give each standby's status the replay lag its primary reports
    (``lag_bytes``), in place."""
    lag_by_name = {entry["application_name"]: entry["lag_bytes"]
                   for state in pg_states.values() for entry in state.get("standbys", [])}
    for node, state in pg_states.items():
        if state.get("role") == "standby" and node in lag_by_name:
            state["lag_bytes"] = lag_by_name[node]


def status_text(status, preferred):
    """
    Return ``salt-run airflow_ha.status``'s data (``nodes``, ``record``,
    ``record_path``, ``airflow_health_url``, ``airflow_health``,
    ``monitoring``, ``backup``, ``problems``) as the text it prints; ``preferred`` is
    cluster:primary.
    """
    rows = []
    for node, states in status["nodes"].items():
        pg_role, timeline, lag = pg_cell(states["postgresql"])
        redis_role, offset = redis_cell(states["redis"])
        rows.append({"node": node, "postgresql": pg_role, "timeline": timeline, "lag": lag,
                     "redis": redis_role, "offset": offset})
    record = status["record"]
    record_text = (f"{record['primary']} since {record['recorded_at']} ({record['reason']}), "
                   f"in {status['record_path']}" if record else
                   f"none yet: the primary is cluster:primary, {preferred}")
    url, health = status["airflow_health_url"], status["airflow_health"]
    if health is None:
        airflow_text = "no haproxy node in the pillar"
    elif "error" in health:
        airflow_text = f"{url}: {health['error']}"
    else:
        airflow_text = f"{url}: " + (", ".join(airflow_health_problems(health)) or "healthy")
    text = status_table(rows, record_text, airflow_text)
    if status.get("monitoring"):
        text += "\n" + monitoring_text(status["monitoring"])
    if status.get("backup"):
        text += "\n" + backup_text(status["backup"])
    if status["problems"]:
        text += "\nproblems:\n" + "\n".join(f"  - {problem}" for problem in status["problems"])
    return text


def monitoring_text(monitoring):
    """The status lines of the monitoring node: its URLs, the alerts firing."""
    lines = [f"monitoring: Prometheus {monitoring['prometheus']}, "
             f"Alertmanager {monitoring['alertmanager']}"]
    if monitoring.get("overview"):
        lines.append(f"overview page: {monitoring['overview']} (HAProxy's statistics user)")
    alerts = monitoring["alerts"]
    if isinstance(alerts, dict):
        lines.append(f"alerts: Prometheus does not answer ({alerts['error']})")
    elif not alerts:
        lines.append("alerts: none firing")
    else:
        lines.append("alerts firing:")
        lines += [f"  - {alert['severity']}: {alert['alertname']}"
                  f"{' on ' + alert['instance'] if alert['instance'] else ''}: {alert['summary']}"
                  for alert in sorted(alerts, key=lambda a: (a["severity"] != "critical",
                                                             a["alertname"], a["instance"] or ""))]
    return "\n".join(lines)


def mebibytes(size):
    """A size in bytes as the status and the runbooks print it."""
    return f"{size / 2**20:.1f} MiB"


def backup_text(backup):
    """The status lines of the backups: the newest of each type, the
    archive, the newest copy of the broker's data."""
    lines = [f"backups on {backup['node']}: stanza {backup.get('status', 'unknown')}"]
    for kind in BACKUP_TYPES:
        newest = [entry for entry in backup.get("backups", ()) if entry["type"] == kind][-1:]
        for entry in newest:
            lines.append(f"  {kind}: {entry['label']}, stopped {entry['stopped']}, "
                         f"{mebibytes(entry['repository_bytes'])} stored")
    archive = backup.get("archive") or {}
    if archive.get("max"):
        lines.append(f"  WAL archive: {archive['min']} to {archive['max']}")
    archiver = backup.get("archiver")
    if archiver:
        lines.append(f"  archiving on the primary: last {archiver['last_archived_wal']} at "
                     f"{archiver['last_archived_time']}, {archiver['ready_count']} waiting")
    if backup.get("redis_copy"):
        lines.append(f"  Redis broker copy: {redis_copy_text(backup['redis_copy'])}")
    return "\n".join(lines)


def redis_copy_text(copy):
    """A copy of the broker's data (``pg_backup.backup``'s ``redis_copy``)."""
    if not copy:
        return "none yet"
    if "failed" in copy:
        return f"{copy['failed']} FAILED (see journalctl -u {copy['failed']} on the backup node)"
    return f"{copy['path']} ({copy['bytes']} bytes), written {copy['written']}"


FENCE_METHODS = {
    "minion": "by its minion (PostgreSQL and Redis stopped, fenced)",
    "agent": "by the fence agent (pillar failover:fence), then its ports checked closed",
    "operator": "by the operator's word (pillar fenced), its ports checked closed",
}


def plan_lines(plan):
    """The lines a runbook's pre-flight prints about its plan
    (``ha_core.failover.plan``'s result)."""
    lines = []
    if plan["down"]:
        lines.append(f"    not answering: {', '.join(plan['down'])}")
    for node, state in sorted(plan["states"].items()):
        position = state.get("current_lsn") or state.get("received_lsn") or "-"
        lines.append(f"    {node}: PostgreSQL {state.get('role')}"
                     f"{' (fenced)' if state.get('fenced') else ''}, "
                     f"timeline {state.get('timeline')}, WAL {position}")
    if plan.get("signs_of_life"):
        lines.append(f"    signs that {plan['old']} runs: {'; '.join(plan['signs_of_life'])}")
    if plan.get("at_risk"):
        lines.append(f"    at risk: {plan['at_risk']}")
    if plan.get("redis_lag_bytes"):
        lines.append(f"    Redis on {plan['new']} misses {plan['redis_lag_bytes']} bytes of its "
                     "master's last known offset")
    if plan["refused"]:
        lines.append(f"    REFUSED: {plan['refused']}")
    elif plan["mode"] == "nothing":
        lines.append(f"    {plan['old']} is already the primary: nothing to fail back")
    else:
        if plan.get("rejoin"):
            lines.append(f"    plan: rejoin {plan['rejoin']} as a standby of {plan['old']} "
                         "(pg_rewind, or a base backup), Redis follows")
            if plan.get("discard"):
                lines.append(f"    discarding {plan['divergence']['discarded_bytes']} bytes of "
                             f"{plan['rejoin']}'s WAL, {plan['discard']} (consented; a copy "
                             "is kept beside its data directory)")
        if plan["mode"] in ("planned", "unplanned", "resume"):
            lines.append(
                f"    plan: {plan['mode']} switch of the PostgreSQL primary and Redis master "
                f"from {plan['old']} to {plan['new']}; Airflow on "
                f"{', '.join(plan['airflow_nodes'])} follows")
        if plan["mode"] == "finish":
            lines.append(f"    plan: finish the orch.failover that recorded {plan['old']} as the "
                         f"primary: Airflow on {', '.join(plan['airflow_nodes'])} follows it, then "
                         "verify; each step skips what is done")
        if plan["mode"] == "resume":
            lines.append("    an earlier run began this switch: its steps run again, each "
                         "skipping what is done")
        if plan.get("fence"):
            lines.append(f"    first, {plan['old']} is fenced {FENCE_METHODS[plan['fence']]}")
    return lines

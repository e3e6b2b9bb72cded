"""
The plans of ``orch/upgrade.sls`` and ``orch/upgrade_rollback.sls``: moving
every Airflow node to the pillar's ``airflow:version`` when that changes
the release line (2.10 to 3.x), and back.

The database schema is migrated once, with every Airflow process of the
cluster stopped, from the node that migrates it (the first scheduler); a
dump of the database taken on the primary just before is what a rollback
restores. Each version has its own virtual environment
(``/opt/airflow/venvs/VERSION``), so the new one is installed while the old
one still runs, and a rollback only points the nodes back at the old one.
"""

import re

# ruff's rules for code that breaks on Airflow 3: removed (AIR301), moved
# to a provider (AIR302), changed signatures (AIR303). AIR311 and AIR312
# (deprecated, still working on 3.x) are reported, not refused.
BREAKING_DAG_RULES = ("AIR301", "AIR302", "AIR303")
SUGGESTED_DAG_RULES = ("AIR311", "AIR312")

# Where the primary keeps the dumps orch.upgrade takes, and their names:
# airflow-<version they were taken from>-<UTC time>.dump.
BACKUP_DIRECTORY = "/var/lib/postgresql/airflow-upgrade"
_BACKUP_NAME = re.compile(r"^airflow-(?P<version>[0-9][0-9A-Za-z.+-]*?)-(?P<stamp>\d{8}T\d{6}Z)\.dump$")


def release_line(version):
    """The release line (major number) of an Airflow version string."""
    return int(str(version).split(".")[0])


def version_key(version):
    """A sort key of a version string: its numeric parts in order."""
    return tuple(int(part) for part in re.findall(r"\d+", str(version)))


def backup_name(version, stamp):
    """The file name of a dump taken from a cluster running ``version``."""
    return f"airflow-{version}-{stamp}.dump"


def newest_backup(names, version):
    """The newest of the dump file ``names`` taken from ``version``, or None."""
    taken = sorted((match["stamp"], name) for name in names
                   if (match := _BACKUP_NAME.match(name)) and match["version"] == version)
    return taken[-1][1] if taken else None


def plan(target, installed, migrator, primary_role, backups, database_current=None,
         rollback=False):
    """
    Decide what ``orch.upgrade`` (or with ``rollback``,
    ``orch.upgrade_rollback``) does. ``target`` is the pillar's
    ``airflow:version``; ``installed`` maps every Airflow node to the
    version it runs (None: no Airflow yet, or the node did not answer:
    ``False``); ``migrator`` the node that migrates the database;
    ``primary_role`` the recorded primary's PostgreSQL role; ``backups`` the
    dump file names on the primary; ``database_current`` whether the
    database is at the head of the version the migrator runs (a rollback
    that already restored it is done).

    Returns ``mode`` (upgrade, rollback, done), ``from`` and ``to``,
    ``backup`` (the dump a rollback restores, or the one an earlier upgrade
    run took), ``take_backup`` (whether the upgrade dumps the database
    first), ``check_dags`` (whether the DAGs are checked against Airflow 3),
    and ``refused`` (why it must not run, or None).
    """
    result = {"mode": None, "from": None, "to": target, "migrator": migrator,
              "installed": dict(installed), "backup": None, "take_backup": False,
              "check_dags": False, "refused": None}
    silent = sorted(node for node, version in installed.items() if version is False)
    if silent:
        result["refused"] = (
            f"{', '.join(silent)} did not answer: every Airflow node moves at once (a node left "
            "behind would run against the other version's database schema). Bring it back, "
            "then run this again")
        return result
    if primary_role != "primary":
        result["refused"] = (
            f"the recorded primary's PostgreSQL is {primary_role or 'not answering'}: the "
            "database is backed up and migrated on the primary. Check salt-run "
            "airflow_ha.status, fail over or bring it back first")
        return result
    others = sorted({version for version in installed.values() if version and version != target},
                    key=version_key)
    if len(others) > 1:
        result["refused"] = (
            f"the Airflow nodes run {', '.join(others)}, besides the pillar's {target}: move "
            "them to one version first (salt NODE state.apply on the nodes of the version's "
            "line)")
        return result
    result["from"] = others[0] if others else installed.get(migrator)
    if rollback:
        return _rollback_plan(result, target, installed, migrator, backups, database_current)
    if others and version_key(others[0]) > version_key(target):
        result["refused"] = (
            f"the nodes run Airflow {others[0]}, newer than the pillar's {target}: going back "
            f"is a rollback (salt-run state.orchestrate orch.upgrade_rollback), which "
            f"restores the database dump taken before the upgrade")
        return result
    if not others:
        result["mode"] = "done"
        return result
    result["mode"] = "upgrade"
    result["check_dags"] = release_line(target) >= 3 > release_line(others[0])
    # The migrator still runs the old version: nothing is migrated yet, so
    # the dump taken now is the one a rollback restores. Otherwise an
    # earlier run switched it (and may have migrated): its dump stays.
    if installed.get(migrator) == others[0]:
        result["take_backup"] = True
    else:
        result["backup"] = newest_backup(backups, others[0])
        if not result["backup"]:
            result["refused"] = (
                f"{migrator} runs {installed.get(migrator)} already, so the database may be "
                f"migrated, and the primary holds no dump taken from {others[0]} "
                f"(in {BACKUP_DIRECTORY}): there is nothing to roll back to. Check "
                "salt-run airflow_ha.status and the README's upgrade section")
    return result


def _rollback_plan(result, target, installed, migrator, backups, database_current):
    if all(version == target for version in installed.values()) and database_current:
        result["mode"] = "done"
        return result
    result["backup"] = newest_backup(backups, target)
    if not result["backup"]:
        result["refused"] = (
            f"the primary holds no dump taken from Airflow {target} (in {BACKUP_DIRECTORY}; "
            "orch.upgrade takes one before it migrates). If it is on the other database "
            f"server, fail back first, with airflow:version {result['from']} in the pillar "
            "again (salt-run state.orchestrate orch.failback), then set it to "
            f"{target} and run this again; otherwise set airflow:version to the version "
            "the nodes run")
        return result
    result["mode"] = "rollback"
    return result


def release_line_refusal(target, installed):
    """Why a failover, failback or rotation must not run, or None: a node
    in ``installed`` (``{node: version}``) runs another release line than
    the pillar's ``target``, so the runbook's state runs would refuse on it
    half-way (after the data tier moved)."""
    others = sorted(node for node, version in installed.items()
                    if version and release_line(version) != release_line(target))
    if not others:
        return None
    running = ", ".join(f"{node} runs {installed[node]}" for node in others)
    return (f"the pillar's airflow:version is {target}, but {running}: this runbook's state "
            "runs would refuse half-way. Set airflow:version back to the version the nodes "
            "run, or move them first (salt-run state.orchestrate orch.upgrade, or "
            "orch.upgrade_rollback), then run this again")


def dag_check_findings(ruff_output):
    """``(breaking, suggested)``: the lines of ruff's concise output that
    name a rule that breaks on Airflow 3, and those that only suggest a
    change."""
    breaking, suggested = [], []
    for line in ruff_output.splitlines():
        codes = re.findall(r"\bAIR\d{3}\b", line)
        if any(code in BREAKING_DAG_RULES for code in codes):
            breaking.append(line.strip())
        elif any(code in SUGGESTED_DAG_RULES for code in codes):
            suggested.append(line.strip())
    return breaking, suggested


def plan_lines(result, rollback=False):
    """The lines the pre-flight prints about its plan."""
    name = "roll back" if rollback else "upgrade"
    lines = ["    Airflow nodes: " + ", ".join(
        f"{node} {version or 'none yet'}" for node, version in sorted(result["installed"].items()))]
    if result["refused"]:
        lines.append(f"    REFUSED: {result['refused']}")
    elif result["mode"] == "done":
        lines.append(f"    every Airflow node runs {result['to']} and the database matches it: "
                     f"nothing to {name}, verify only")
    elif rollback:
        lines.append(f"    roll back {result['from']} -> {result['to']}: restore {result['backup']} "
                     f"(every DAG run since that dump is lost), then every node runs {result['to']}")
    else:
        backup = "take a dump first" if result["take_backup"] else f"keep {result['backup']}"
        lines.append(f"    upgrade {result['from']} -> {result['to']}: {backup}, migrate the "
                     f"database once from {result['migrator']}")
    return lines

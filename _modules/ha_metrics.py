"""
Export a database server's replication state for Prometheus: what
``pg_replication.status`` and ``redis_replication.status`` report here, and
this server's copy of the topology record, written as a file for the node
exporter's textfile collector (``ha_core.metrics`` names the metrics).

The minion runs ``ha_metrics.write`` on a schedule, so a server whose
minion stops exports nothing new, and its ``airflow_ha_collected_timestamp_seconds``
ages: that staleness is itself an alert.

:configuration: Settings are read with ``config.get`` under the key
    ``ha_metrics``; every key is optional:

    .. code-block:: yaml

        ha_metrics:
          textfile: /var/lib/prometheus/node-exporter/airflow_ha.prom
          topology_record: /var/lib/airflow-ha/topology.json
"""

import json
import logging
import os
import tempfile
import time

from salt.exceptions import CommandExecutionError

from ha_core import metrics

log = logging.getLogger(__name__)

__virtualname__ = "ha_metrics"

DEFAULTS = {
    "textfile": "/var/lib/prometheus/node-exporter/airflow_ha.prom",
    "topology_record": "/var/lib/airflow-ha/topology.json",
}


def __virtual__():
    return __virtualname__


def _settings():
    return {**DEFAULTS, **(__salt__["config.get"]("ha_metrics") or {})}


def _status(function):
    """A status function's answer, or None when it fails (the metrics then
    say it was not collected); the failure goes to the minion's log."""
    try:
        return __salt__[function]()
    except (CommandExecutionError, KeyError) as error:
        log.warning("ha_metrics: %s failed: %s", function, error)
        return None


def _record(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def collect():
    """
    Return this server's replication metrics in Prometheus' text format.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 ha_metrics.collect
    """
    settings = _settings()
    return metrics.exposition(metrics.server_samples(
        __grains__["id"], _status("pg_replication.status"), _status("redis_replication.status"),
        _record(settings["topology_record"]), time.time()))


def write():
    """
    Write this server's replication metrics to the textfile collector's
    file, replacing it at once (the collector never reads half a file).
    Returns ``path`` and ``series`` (how many series it holds).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 ha_metrics.write
    """
    path = _settings()["textfile"]
    text = collect()
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CommandExecutionError(
            f"{directory} does not exist: install the node exporter (its textfile collector "
            "reads that directory), or set ha_metrics:textfile")
    descriptor, scratch = tempfile.mkstemp(dir=directory, prefix=".airflow_ha.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        os.unlink(scratch)
        raise
    return {"path": path,
            "series": sum(1 for line in text.splitlines() if not line.startswith("#"))}

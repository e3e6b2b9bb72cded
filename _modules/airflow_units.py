"""
Airflow's systemd units on this node, for the runbooks' steps that stop the
schedulers and start Airflow again. One call does all of a role's units on
the node, and the master asks every node at once
(``ha_nodes.Nodes.call_each``), instead of one call per unit and per fact.
The units are named by the caller (``ha_core.cluster.airflow_units``).
"""

import os
import time

import psutil
import salt.utils.path
from salt.exceptions import CommandExecutionError

from ha_core import runbook

__virtualname__ = "airflow_units"


def __virtual__():
    if not salt.utils.path.which("systemctl"):
        return (False, "airflow_units: systemctl not found; Airflow's units are systemd units")
    return __virtualname__


def stop(units, no_block=False):
    """
    Stop ``units`` together (systemd stops them side by side) and return
    ``{unit: its state afterwards}``, as ``systemctl is-active`` says it:
    ``inactive`` or ``failed`` once stopped. A stop that a restart request
    cancelled (the reactor's, for a node that has just returned) leaves the
    unit ``active`` or ``activating``: the caller stops it again. With
    ``no_block`` the stop is requested, not waited for (the units may still
    be ``active`` or ``deactivating``).

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 airflow_units.stop '[airflow-scheduler, airflow-dag-processor]'
    """
    units = list(units)
    __salt__["cmd.run_all"](["systemctl", "stop", *(["--no-block"] if no_block else []), "--",
                             *units], python_shell=False)
    states = __salt__["cmd.run_stdout"](["systemctl", "is-active", "--", *units],
                                        python_shell=False, ignore_retcode=True).split()
    return dict(zip(units, states))


def resume(here, elsewhere=(), configuration=(), no_block=False):
    """
    Run this node's units of one role where they belong: stop and disable
    the units in ``elsewhere`` (those that run only where the primary is,
    when it is not here); enable the units in ``here`` and start each that
    is stopped, or restart it when its process is older than the newest of
    the ``configuration`` files (the node missed a restart). A unit running
    since its configuration changed is left alone; one still starting is
    given its start-up time first (``ha_core.runbook.start_wait``). With
    ``no_block`` the (re)start is requested, not waited for (a worker's warm
    shutdown lets its running tasks finish). Returns the units (re)started.

    CLI Example:

    .. code-block:: bash

        salt airflow-server1 airflow_units.resume '[airflow-scheduler]' \\
            configuration='[/opt/airflow/airflow.cfg]'
    """
    for unit in elsewhere:
        __salt__["service.stop"](unit)
        __salt__["service.disable"](unit)
    configuration_age = _seconds_since_changed(configuration)
    started = []
    for unit in here:
        if not __salt__["service.enabled"](unit):
            __salt__["service.enable"](unit)
        wait = runbook.start_wait(_process_age(unit), configuration_age)
        if wait is None:
            continue
        time.sleep(wait)
        if not __salt__["service.restart"](unit, no_block=no_block):
            raise CommandExecutionError(f"{unit} did not start")
        started.append(unit)
    return started


def _process_age(unit):
    """Seconds since ``unit``'s main process started; None when it does not run."""
    pid = int(__salt__["cmd.run_stdout"](["systemctl", "show", "-P", "MainPID", "--", unit],
                                         python_shell=False) or 0)
    try:
        return time.time() - psutil.Process(pid).create_time() if pid else None
    except psutil.NoSuchProcess:
        return None


def _seconds_since_changed(paths):
    """Seconds since the youngest of ``paths`` changed (infinite for none)."""
    return min((time.time() - os.stat(path).st_mtime for path in paths), default=float("inf"))

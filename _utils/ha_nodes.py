"""
Asking the nodes from the master, for the ``airflow_ha`` runner: Salt's
LocalClient with the timeouts and failure reports the runbook steps rely
on, and the state tree's settings files. The Salt-side counterpart of the
core (``ha_core``, which imports no Salt); imported by the runner as plain
Python (Salt's loader puts ``_utils`` on ``sys.path``).
"""

import os
import shlex
import subprocess

import salt.client
import salt.utils.files
import salt.utils.yaml
from ha_core import errors, probes
from ha_core.cluster import component_settings

# How long a node may take to answer before it counts as down.
PING_SECONDS = 3
# The jobs of a runbook step that go on on a node when the run that started
# them stops (a killed salt-run, a lost master): a later run waits for them.
STEP_FUNCTIONS = ("pg_replication.", "redis_replication.", "state.", "service.", "cmd.")


class Nodes:
    """The minions of this master, asked through its LocalClient."""

    def __init__(self, opts):
        self.client = salt.client.get_local_client(mopts=opts)

    def answering(self, nodes, down=None):
        """
        The subset of nodes whose minions answer within a few seconds; nodes
        in ``down`` (found down by a pre-flight) are not asked again.
        """
        nodes = sorted(set(nodes) - set(down or ()))
        if not nodes:
            return set()
        replies = self.client.cmd(nodes, "test.ping", tgt_type="list", timeout=PING_SECONDS,
                                  gather_job_timeout=PING_SECONDS)
        return {node for node in nodes if replies.get(node) is True}

    def call(self, node, function, *args, timeout=120, **kwargs):
        """
        Run an execution module function on one node and return its result;
        Unreachable when the node does not answer, OperationFailed when the
        function fails.
        """
        reply = self.client.cmd(node, function, arg=list(args), kwarg=kwargs or None,
                                timeout=timeout, full_return=True)
        if node not in reply:
            raise errors.Unreachable(f"{node} did not answer {function} within {timeout} s")
        result = reply[node]
        if result.get("retcode", 0) != 0:
            raise errors.OperationFailed(f"{function} on {node} failed: {result.get('ret')}")
        return result.get("ret")

    def connects(self, node, host, port):
        """Whether ``node`` can open a TCP connection to ``host``:``port``
        now (network.connect, which fails the job when it cannot)."""
        reply = self.client.cmd(node, "network.connect", arg=[host, port],
                                kwarg={"timeout": 2}, timeout=30, full_return=True)
        if node not in reply:
            raise errors.Unreachable(f"{node} did not answer network.connect within 30 s")
        return (reply[node].get("ret") or {}).get("result") is True

    def wait_ports_closed(self, seen_from, address, ports, wait):
        """Wait until none of ``ports`` of ``address`` accepts a connection
        from the node ``seen_from``; OperationFailed after ``wait`` seconds."""
        def closed():
            return not [port for port in ports if self.connects(seen_from, address, port)]

        probes.wait_until(closed, wait, f"ports {ports} of {address} closed, seen from {seen_from}")

    def unit_ages(self, node, unit, files):
        """``(seconds since unit's main process started, or None when it does
        not run; seconds since the youngest of files changed)`` on node."""
        paths = " ".join(shlex.quote(path) for path in files)
        process, youngest = self.call(node, "cmd.run", cmd=(
            f"pid=$(systemctl show -P MainPID {shlex.quote(unit)}); "
            "echo $(ps -o etimes= -p $pid 2>/dev/null || echo -) "
            f"$(( $(date +%s) - $(stat -c %Y {paths} | sort -n | tail -1) ))"),
            python_shell=True).split()
        return (None if process == "-" else int(process)), int(youngest)

    def step_jobs(self, nodes):
        """``{node: [function, ...]}`` of the runbook steps' jobs still
        running on the nodes that answer (see STEP_FUNCTIONS)."""
        if not nodes:
            return {}
        replies = self.client.cmd(sorted(nodes), "saltutil.running", tgt_type="list",
                                  timeout=30)
        running = {node: sorted(str(job.get("fun")) for job in jobs
                                if str(job.get("fun")).startswith(STEP_FUNCTIONS))
                   for node, jobs in replies.items() if isinstance(jobs, list)}
        return {node: functions for node, functions in running.items() if functions}

    def statuses(self, nodes, function):
        """``{node: status}`` (``function``'s result) of the nodes that answer."""
        replies = self.client.cmd(list(nodes), function, tgt_type="list", timeout=30,
                                  full_return=True)
        return {node: reply["ret"] for node, reply in replies.items()
                if reply.get("retcode", 0) == 0 and isinstance(reply.get("ret"), dict)}

    def data_tier_states(self, cluster, answering):
        """The pg_replication and redis_replication statuses of the answering
        database and Redis nodes, as two ``{node: status}``."""
        return (self.statuses(sorted(answering & set(cluster.database_nodes())),
                              "pg_replication.status"),
                self.statuses(sorted(answering & set(cluster.redis_nodes())),
                              "redis_replication.status"))

    def apply(self, nodes, sls, timeout, test=False, pillar=None, exclude=None):
        """Run the state ``sls`` on the nodes (their highstate when ``sls``
        is None; with ``test``, only what it would change; with ``pillar``
        over the environment's; without the state IDs in ``exclude``),
        after any state run already under way there (a returning node's,
        started by the reactor); ``{node: state results}``."""
        kwarg = {"queue": True, "test": test}
        if pillar:
            kwarg["pillar"] = pillar
        if exclude:
            kwarg["exclude"] = [{"id": state_id} for state_id in exclude]
        return self.client.cmd(list(nodes), "state.apply", [sls] if sls else [], tgt_type="list",
                               kwarg=kwarg, timeout=timeout)

    def airflow_versions(self, nodes, venv):
        """``{node: the Airflow version its virtual environment at venv
        holds, or None}`` of the nodes that answer."""
        if not nodes:
            return {}
        python = shlex.quote(f"{venv}/bin/python")
        replies = self.client.cmd(sorted(nodes), "cmd.run", [
            f"! test -x {python} || {python} -c "
            "'import importlib.metadata as m; print(m.version(\"apache-airflow\"))'"],
            tgt_type="list", timeout=60, full_return=True)
        return {node: (reply.get("ret") or "").strip() or None
                for node, reply in replies.items() if reply.get("retcode", 0) == 0}

    def render_validation(self, nodes):
        """
        The pillar validation (salt/validate, which every highstate renders
        first) as the first of ``nodes`` renders it: a dict when the pillar
        is valid, the render errors otherwise, None when there is no node.
        """
        if not nodes:
            return None
        reply = self.client.cmd(nodes[0], "state.show_sls", ["validate"], timeout=60,
                                full_return=True)
        rendered = reply.get(nodes[0], {}).get("ret")
        if not isinstance(rendered, (dict, list)):
            raise errors.OperationFailed(
                f"{nodes[0]} did not render the pillar validation: {rendered}")
        return rendered


def run_fence_agent(command, node, address, wait):
    """Run a fence agent (pillar failover:fence) on the master with the
    node's name and address as its last two arguments; returns how the node
    was fenced, OperationFailed naming the agent's last words otherwise."""
    argv = [*shlex.split(command), node, address]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=wait, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise errors.OperationFailed(f"the fence agent {argv[0]} failed for {node}: {error}")
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise errors.OperationFailed(f"the fence agent {argv[0]} failed for {node} (exit "
                                     f"{result.returncode}): {' '.join(output)}")
    return f"by the fence agent {argv[0]}"


def _state_tree_yaml(opts, component, name):
    """salt/<component>/<name>.yaml from the master's state tree, or {}."""
    for root in opts["file_roots"]["base"]:
        path = os.path.join(root, component, f"{name}.yaml")
        if os.path.isfile(path):
            with salt.utils.files.fopen(path) as stream:
                return salt.utils.yaml.safe_load(stream) or {}
    return {}


def release_lines(opts):
    """The Airflow release lines of the state tree (salt/airflow/versionmap.yaml):
    ``{line: its values}``."""
    return _state_tree_yaml(opts, "airflow", "versionmap")


def settings(opts, pillar, component, os_family):
    """
    A component's settings as its states see them on a node of ``os_family``
    (salt/settings.jinja): defaults.yaml, the OS family's values from
    osfamilymap.yaml, then the pillar; over its release line's values when
    it has a versionmap.yaml (airflow).
    """
    os_family_values = _state_tree_yaml(opts, component, "osfamilymap").get(os_family) or {}
    defaults = _state_tree_yaml(opts, component, "defaults").get(component) or {}
    return component_settings(component, defaults, os_family_values, pillar,
                              _state_tree_yaml(opts, component, "versionmap"))

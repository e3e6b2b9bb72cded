"""
Asking the nodes from the master, for the ``airflow_ha`` runner: Salt's
LocalClient with the timeouts and failure reports the runbook steps rely
on, and the state tree's settings files. The Salt-side counterpart of the
core (``ha_core``, which imports no Salt); imported by the runner as plain
Python (Salt's loader puts ``_utils`` on ``sys.path``).
"""

import contextlib
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
        self.started = 0  # jobs from start whose returns are still to be read

    def answering(self, nodes, down=None):
        """
        The subset of nodes whose minions answer within a few seconds; nodes
        in ``down`` (found down by a pre-flight) are not asked again.
        """
        nodes = sorted(set(nodes) - set(down or ()))
        # Only the replies within PING_SECONDS: LocalClient.cmd would then ask
        # a silent node whether the ping still runs there, and wait as long
        # again for a crashed node (measured: 6 s a pre-flight, not 3).
        job, timeout = self.start(nodes, "test.ping", timeout=PING_SECONDS)
        replies = {}
        if job:
            with self._reading():
                for returned in self.client.get_event_iter_returns(job["jid"], job["minions"],
                                                                   timeout=timeout):
                    replies.update({node: reply.get("ret") for node, reply in returned.items()})
                    if set(replies) >= set(job["minions"]):
                        break
        return {node for node in nodes if replies.get(node) is True}

    def call(self, node, function, *args, timeout=120, **kwargs):
        """
        Run an execution module function on one node and return its result;
        Unreachable when the node does not answer, OperationFailed when the
        function fails.
        """
        reply = self.client.cmd(node, function, arg=list(args), kwarg=kwargs or None,
                                timeout=timeout, full_return=True)
        return _result(node, function, reply.get(node), timeout)

    def start(self, nodes, function, *args, timeout=60, **kwargs):
        """Publish ``function`` to ``nodes`` and return at once: the job, for
        ``returns``. Jobs started one after the other run side by side."""
        nodes = sorted(nodes)
        # listen: the client keeps this job's returns while it awaits another's.
        job = self.client.run_job(nodes, function, list(args), tgt_type="list", timeout=timeout,
                                  kwarg=kwargs or None, listen=True) if nodes else {}
        self.started += bool(job)
        return job, timeout

    def returns(self, started):
        """``{node: full return}`` of a job from ``start``: the nodes that
        answered within its timeout."""
        job, timeout = started
        replies = {}
        if not job:
            return replies
        with self._reading():
            for returned in self.client.get_cli_event_returns(
                    job["jid"], job["minions"], timeout, tgt=job["minions"], tgt_type="list"):
                replies.update(returned or {})
        return replies

    @contextlib.contextmanager
    def _reading(self):
        """While the returns of a job from ``start`` are read; after the last
        such job the client stops listening, as LocalClient.cmd does."""
        try:
            yield
        finally:
            self.started -= 1
            if not self.started:
                self.client.event.close_pub()

    def call_each(self, calls, timeout=120):
        """
        Run one function on each of several nodes, all at once:
        ``calls`` is ``{node: (function, args, kwargs)}``. Returns ``{node: result}`` once every node has
        answered; raises as call does for the first node, in name order,
        that did not answer or whose function failed.
        """
        jobs = {}
        for node, (function, args, kwargs) in sorted(calls.items()):
            jobs[node] = self.start([node], function, *args, timeout=timeout, **kwargs)
        return {node: _result(node, calls[node][0], self.returns(job).get(node), timeout)
                for node, job in jobs.items()}

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

    def step_jobs(self, nodes):
        """``{node: [function, ...]}`` of the runbook steps' jobs still
        running on the nodes that answer (see STEP_FUNCTIONS)."""
        running = {node: sorted(str(job.get("fun")) for job in reply.get("ret")
                                if str(job.get("fun")).startswith(STEP_FUNCTIONS))
                   for node, reply in self.returns(self.start(nodes, "saltutil.running",
                                                              timeout=30)).items()
                   if isinstance(reply.get("ret"), list)}
        return {node: functions for node, functions in running.items() if functions}

    def data_tier_states(self, cluster, answering):
        """The pg_replication and redis_replication statuses of the answering
        database and Redis nodes, as two ``{node: status}``, asked at once."""
        jobs = self._start_data_tier(cluster, answering)
        return tuple(_statuses(self.returns(job)) for job in jobs)

    def _start_data_tier(self, cluster, answering):
        return (self.start(answering & set(cluster.database_nodes()), "pg_replication.status",
                           timeout=30),
                self.start(answering & set(cluster.redis_nodes()), "redis_replication.status",
                           timeout=30))

    def preflight(self, cluster, answering, venv):
        """
        What a runbook's pre-flight asks the answering nodes, asked at once:
        ``(validation, versions, pg_states, redis_states)`` as
        render_validation, airflow_versions and data_tier_states return them.
        """
        validation = self._start_validation(sorted(answering))
        versions = self._start_versions(answering & set(cluster.airflow_nodes()), venv)
        data_tier = self._start_data_tier(cluster, answering)
        return (self._validation(validation), _versions(self.returns(versions)),
                *(_statuses(self.returns(job)) for job in data_tier))

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
        return _versions(self.returns(self._start_versions(nodes, venv)))

    def _start_versions(self, nodes, venv):
        python = shlex.quote(f"{venv}/bin/python")
        return self.start(nodes, "cmd.run",
                          f"! test -x {python} || {python} -c "
                          "'import importlib.metadata as m; print(m.version(\"apache-airflow\"))'",
                          timeout=60)

    def render_validation(self, nodes):
        """
        The pillar validation (salt/validate, which every highstate renders
        first) as the first of ``nodes`` renders it: a dict when the pillar
        is valid, the render errors otherwise, None when there is no node.
        """
        return self._validation(self._start_validation(nodes))

    def _start_validation(self, nodes):
        return self.start(nodes[:1], "state.show_sls", "validate", timeout=60)

    def _validation(self, started):
        job, _ = started
        if not job:
            return None
        node = job["minions"][0]
        rendered = self.returns(started).get(node, {}).get("ret")
        if not isinstance(rendered, (dict, list)):
            raise errors.OperationFailed(
                f"{node} did not render the pillar validation: {rendered}")
        return rendered


def _statuses(replies):
    """``{node: status}`` of the replies whose function succeeded with one."""
    return {node: reply["ret"] for node, reply in replies.items()
            if reply.get("retcode", 0) == 0 and isinstance(reply.get("ret"), dict)}


def _versions(replies):
    return {node: (reply.get("ret") or "").strip() or None
            for node, reply in replies.items() if reply.get("retcode", 0) == 0}


def _result(node, function, reply, timeout):
    """A function's result from ``node``'s full return (None, or Salt's
    ``no_return`` stand-in, when it did not answer); Unreachable or
    OperationFailed as Nodes.call says."""
    if not isinstance(reply, dict) or reply.get("out") == "no_return":
        raise errors.Unreachable(f"{node} did not answer {function} within {timeout} s")
    if reply.get("retcode", 0) != 0:
        raise errors.OperationFailed(f"{function} on {node} failed: {reply.get('ret')}")
    return reply.get("ret")


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

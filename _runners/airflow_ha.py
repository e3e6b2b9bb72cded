"""
Operate the highly available Airflow platform from the master: its status,
the topology record, and the steps of the failover and failback runbooks
(``orch/failover.sls``, ``orch/failback.sls``).

Every step acts through the data-tier execution modules on the nodes
(``pg_replication``, ``redis_replication``) and Salt's own modules, checks
what it achieved before it returns, prints its progress as it goes, and on
failure returns ``{"Error": ...}`` (which stops an orchestration) saying
where the cluster stands and what the operator can do next.

The topology record names the node that is the PostgreSQL primary and the
Redis master now. It is a JSON file on the master,
``<root_dir>/var/lib/airflow-ha/topology-<environment>.json``, which
``pillar/topology.sls`` serves as the pillar key ``topology``; the states
take the primary from it (``salt/settings.jinja``), so a highstate keeps
what a failover did. Without a record, the primary is ``cluster:primary``.

CLI Example:

.. code-block:: bash

    salt-run airflow_ha.status
    salt-run airflow_ha.status --out=json
    salt-run state.orchestrate orch.failover
"""

import datetime
import json
import logging
import os
import re
import ssl
import sys
import tempfile
import time
import urllib.request

import salt.client
import salt.utils.files
import salt.utils.yaml

log = logging.getLogger(__name__)

# How long a node may take to answer before it counts as down.
_PING_SECONDS = 3
# Long operations: a base backup, a warm shutdown, a state run.
_LONG_SECONDS = 600
_POLL_SECONDS = 1
# A forced failover refuses when more WAL than this is known to be missing
# on the standby (pillar failover:max_lag_bytes overrides it).
_MAX_LAG_BYTES = 16 * 1024 ** 2


class StepFailed(Exception):
    """A step could not do or verify what it is for."""


# --- Pure logic: decisions and checks (no Salt, no servers) ---------------------


def parse_lsn(text):
    """
    Return the integer position of an LSN written as ``"X/Y"`` (hexadecimal,
    at most 8 digits each); ValueError for anything else.
    """
    match = re.fullmatch(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})", text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def received_everything(checkpoint_lsn, received_lsn):
    """
    Whether a standby that received WAL up to ``received_lsn`` (where its
    last complete record begins) has the old primary's shutdown checkpoint
    record, which begins at ``checkpoint_lsn``: then it has every commit.
    """
    return received_lsn is not None and parse_lsn(received_lsn) >= parse_lsn(checkpoint_lsn)


def switch_proves_no_loss(checkpoint_lsn, switch_lsn):
    """
    Whether the promoted timeline began after the old primary's shutdown
    checkpoint record: the standby replayed all of the old timeline.
    """
    return parse_lsn(switch_lsn) > parse_lsn(checkpoint_lsn)


def failover_decision(current, candidate, current_up, candidate_state, force,
                      last_primary_lsn=None, last_seen_at=None, max_lag_bytes=None):
    """
    Decide how orch.failover moves the primary from ``current`` to
    ``candidate``: returns ``{"mode": "planned"|"unplanned", "refused": reason
    or None, "at_risk": text or None, "lag_bytes": int or None}``.

    current_up
        Whether the current primary's PostgreSQL answers (its minion too).
    candidate_state
        ``pg_replication.status`` of the candidate (None: it does not answer).
    last_primary_lsn, last_seen_at
        The current primary's last known WAL position and when it was seen
        (from the Salt mine), when it is down.
    max_lag_bytes
        With force, the most known-missing WAL that is still accepted.
    """
    decision = {"mode": "planned" if current_up else "unplanned", "refused": None,
                "at_risk": None, "lag_bytes": None}
    if candidate_state is None:
        decision["refused"] = (f"{candidate} does not answer: there is no standby to promote; "
                               "bring it back, then run the failover again")
        return decision
    if candidate_state.get("role") != "standby":
        decision["refused"] = (f"{candidate} is {candidate_state.get('role')}, not a running "
                               f"standby: check it with `salt {candidate} pg_replication.status`")
        return decision
    if candidate_state.get("fenced"):
        decision["refused"] = (f"{candidate} is fenced: it is a former primary that has not "
                               "rejoined yet, and its data may have diverged; rejoin it with "
                               "orch.failback before it can be promoted")
        return decision
    if current_up:
        return decision
    received = candidate_state.get("received_lsn")
    if last_primary_lsn and received:
        decision["lag_bytes"] = max(0, parse_lsn(last_primary_lsn) - parse_lsn(received))
        known = (f"{decision['lag_bytes']} bytes of WAL are known to be missing"
                 if decision["lag_bytes"] else f"{candidate} has all of it")
        decision["at_risk"] = (
            f"{current} is down; the master last saw it at WAL {last_primary_lsn} "
            f"({last_seen_at or 'time unknown'}) and {candidate} has received up to {received}: "
            f"{known}, but whatever {current} committed after it was last seen is lost, and so "
            "are Redis writes it acknowledged but had not replicated")
    else:
        seen = (f"the master last saw it at WAL {last_primary_lsn}" if last_primary_lsn
                else "the master knows no recent WAL position of it")
        decision["at_risk"] = (
            f"{current} is down; {seen}, and {candidate} reports no received position: "
            f"how much of what {current} committed is lost cannot be told, and so are Redis "
            "writes it acknowledged but had not replicated"
            if not received else
            f"{current} is down and the master knows no recent WAL position of it; {candidate} "
            f"has received up to {received}: whatever {current} committed beyond that is lost, "
            "and so are Redis writes it acknowledged but had not replicated")
    if not force:
        decision["refused"] = (
            f"unplanned failover refused: {decision['at_risk']}. If {current} cannot come back "
            "soon, accept that loss with: salt-run state.orchestrate orch.failover "
            "pillar='{\"force\": true}'")
    elif (max_lag_bytes is not None and decision["lag_bytes"] is not None
          and decision["lag_bytes"] > max_lag_bytes):
        decision["refused"] = (
            f"unplanned failover refused even with force: {decision['lag_bytes']} bytes of WAL "
            f"are known to be missing on {candidate}, more than failover:max_lag_bytes "
            f"({max_lag_bytes}). Bring {current} back if at all possible; to accept the loss, "
            "raise the bound for this run: pillar='{\"force\": true, \"max_lag_bytes\": "
            f"{decision['lag_bytes']}}}'")
    return decision


def topology_problems(recorded, pg_states, redis_states, down, recorded_address=None):
    """
    Return what is wrong with the cluster against the topology record, as a
    list of sentences (empty: exactly one writable PostgreSQL and one Redis
    master, both on the recorded node, and every other answering node
    streaming from it).

    recorded
        The node the topology record names as primary.
    pg_states, redis_states
        ``{node: status}`` of the nodes that answered.
    down
        Nodes that did not answer (expected after an unplanned failover).
    recorded_address
        The recorded primary's address, which Redis replicas must follow
        (not checked when None).
    """
    problems = []
    primaries = sorted(node for node, state in pg_states.items() if state.get("role") == "primary")
    if primaries != [recorded]:
        problems.append(f"PostgreSQL primaries: {', '.join(primaries) or 'none'} "
                        f"(expected only {recorded})")
    streaming = {entry["application_name"] for entry in
                 pg_states.get(recorded, {}).get("standbys", []) if entry["state"] == "streaming"}
    for node in sorted(set(pg_states) - {recorded}):
        if node not in streaming:
            problems.append(f"PostgreSQL on {node} is {pg_states[node].get('role')}, not a standby "
                            f"streaming from {recorded}")
    masters = sorted(node for node, state in redis_states.items() if state.get("role") == "master")
    if masters != [recorded]:
        problems.append(f"Redis masters: {', '.join(masters) or 'none'} (expected only {recorded})")
    for node in sorted(set(redis_states) - {recorded}):
        state = redis_states[node]
        if (state.get("role") != "replica" or state.get("master_link_status") != "up"
                or recorded_address not in (None, state.get("master_host"))):
            problems.append(f"Redis on {node} is not a replica with its link to {recorded} up")
    for node in sorted(down):
        if node == recorded:
            problems.append(f"{node}, the recorded primary, does not answer")
    return problems


def airflow_health_problems(body):
    """
    Return what is unhealthy in the JSON body of Airflow's ``/health`` (which
    answers HTTP 200 either way), as a list (empty: healthy).
    """
    if "error" in body:
        return [f"no answer ({body['error']})"]
    statuses = {part: (body.get(part) or {}).get("status") for part in ("metadatabase", "scheduler")}
    return [f"{part} is {status}" for part, status in statuses.items() if status != "healthy"]


def status_table(rows, record, airflow):
    """
    Return the status as the text table ``salt-run airflow_ha.status`` prints.
    """
    header = ("node", "postgresql", "timeline", "lag", "redis", "offset")
    lines = [header] + [tuple(str(row[key]) for key in
                              ("node", "postgresql", "timeline", "lag", "redis", "offset"))
                        for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines]
    text.append("")
    text.append(f"topology record: {record}")
    text.append(f"airflow: {airflow}")
    return "\n".join(text)


def _pg_cell(state):
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


def _redis_cell(state):
    if state is None:
        return "no answer", "-"
    if state.get("role") == "master":
        return "master", state.get("master_repl_offset")
    return (f"replica ({state.get('master_link_status')})",
            f"{state.get('replica_repl_offset')} (lag {state.get('lag_bytes')})")


# --- Talking to the master and the nodes -----------------------------------------


def _say(message):
    """Progress for the operator, as it happens (orchestrations print their
    results only at the end)."""
    print(message, file=sys.stderr, flush=True)
    log.info("airflow_ha: %s", message)


def _client():
    return salt.client.get_local_client(mopts=__opts__)


def _answering(nodes, down=None):
    """
    The subset of nodes whose minions answer within a few seconds; nodes in
    ``down`` (found down by the pre-flight) are not asked again.
    """
    nodes = sorted(set(nodes) - set(down or ()))
    if not nodes:
        return set()
    replies = _client().cmd(nodes, "test.ping", tgt_type="list", timeout=_PING_SECONDS,
                            gather_job_timeout=_PING_SECONDS)
    return {node for node in nodes if replies.get(node) is True}


def _call(node, function, *args, timeout=120, **kwargs):
    """
    Run an execution module function on one node and return its result;
    raise StepFailed when the node does not answer or the function fails.
    """
    reply = _client().cmd(node, function, arg=list(args), kwarg=kwargs or None, timeout=timeout,
                          full_return=True)
    if node not in reply:
        raise StepFailed(f"{node} did not answer {function} within {timeout} s")
    result = reply[node]
    if result.get("retcode", 0) != 0:
        raise StepFailed(f"{function} on {node} failed: {result.get('ret')}")
    return result.get("ret")


def _statuses(nodes, function):
    """``{node: status}`` (``function``'s result) of the nodes that answer."""
    replies = _client().cmd(list(nodes), function, tgt_type="list", timeout=30, full_return=True)
    return {node: reply["ret"] for node, reply in replies.items()
            if reply.get("retcode", 0) == 0 and isinstance(reply.get("ret"), dict)}


def _pillar():
    """The environment's pillar as the master renders it (no node needed)."""
    return __salt__["pillar.show_pillar"]()


def _defaults(component):
    """A component's defaults.yaml from the state tree."""
    for root in __opts__["file_roots"]["base"]:
        path = os.path.join(root, component, "defaults.yaml")
        if os.path.isfile(path):
            with salt.utils.files.fopen(path) as stream:
                return salt.utils.yaml.safe_load(stream)[component]
    return {}


def _setting(pillar, component, key):
    return pillar.get(component, {}).get(key, _defaults(component).get(key))


class _Cluster:
    """The cluster as the pillar describes it."""

    def __init__(self, pillar):
        cluster = pillar.get("cluster", {})
        self.pillar = pillar
        self.nodes = cluster.get("nodes", {})
        self.preferred = cluster.get("primary")
        self.primary = (pillar.get("topology") or {}).get("primary") or self.preferred

    def address(self, node):
        return self.nodes[node]["address"]

    def with_role(self, *roles):
        return sorted(name for name, node in self.nodes.items()
                      if set(roles) & set(node.get("roles", [])))

    def database_nodes(self):
        return self.with_role("postgresql")

    def airflow_nodes(self):
        return sorted(name for name, node in self.nodes.items()
                      if any(role.startswith("airflow-") for role in node.get("roles", [])))

    def other(self, node):
        others = [name for name in self.database_nodes() if name != node]
        if len(others) != 1:
            raise StepFailed(f"failover needs exactly two database nodes; the pillar has "
                             f"{', '.join(self.database_nodes())}")
        return others[0]

    def health_url(self):
        balancers = self.with_role("haproxy")
        if not balancers:
            return None
        port = _setting(self.pillar, "haproxy", "airflow_tls_port")
        return f"https://{self.address(balancers[0])}:{port}/health"

    def webserver_health_url(self, node):
        port = _setting(self.pillar, "airflow", "webserver")["port"]
        return f"http://{self.address(node)}:{port}/health"


def _cluster():
    return _Cluster(_pillar())


def _health(url):
    """
    Airflow's /health JSON at url, or {"error": why}. The load balancer's
    certificate is not verified: the check sends nothing and only reads
    whether Airflow is healthy, and the master may reach the balancer by an
    address the certificate does not name.
    """
    context = ssl._create_unverified_context()  # pylint: disable=protected-access
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as error:
        return {"error": str(error)}


def _wait(check, seconds, what):
    """Poll check() until it returns a true value; StepFailed after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StepFailed(f"{what} not reached within {seconds} s")
        time.sleep(_POLL_SECONDS)


def _wait_without_problems(problems_of, seconds, what):
    """Poll problems_of() until it returns no problem; StepFailed naming the
    last ones after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        problems = problems_of()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise StepFailed(f"{what} not reached within {seconds} s: " + "; ".join(problems))
        time.sleep(_POLL_SECONDS)


def _wait_healthy(url, seconds, what):
    _wait_without_problems(lambda: airflow_health_problems(_health(url)), seconds,
                           f"{what} ({url})")


def _step(title, action, advice):
    """
    Run one runbook step: print its title, run action() (which returns a
    dict of what it verified), print the outcome. On failure, return the
    error with where the cluster stands and what to do next.
    """
    _say(f"==> {title}")
    started = time.monotonic()
    try:
        verified = action()
    except StepFailed as error:
        _say(f"    FAILED: {error}")
        __context__["retcode"] = 1
        return {"Error": f"{title}: {error}",
                "cluster now": _brief_status(),
                "what to do next": advice}
    verified["seconds"] = round(time.monotonic() - started, 1)
    _say(f"    done in {verified['seconds']} s: "
         + ", ".join(f"{key} {value}" for key, value in verified.items() if key != "seconds"))
    return verified


def _brief_status():
    try:
        return status(as_text=True)
    except Exception as error:  # pylint: disable=broad-except
        return f"could not be read: {error}"


# --- The topology record -----------------------------------------------------------


def _record_path():
    directory = os.path.join(__opts__["root_dir"], "var", "lib", "airflow-ha")
    return os.path.join(directory, f"topology-{__opts__.get('airflow_environment')}.json")


def _read_record():
    try:
        with salt.utils.files.fopen(_record_path()) as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None


def topology():
    """
    Return the topology record: where it is and what it says (``record`` is
    None when no failover has happened: the primary is ``cluster:primary``).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.topology
    """
    return {"path": _record_path(), "record": _read_record(), "preferred": _cluster().preferred}


def record_primary(node, reason):
    """
    Record ``node`` as the PostgreSQL primary and Redis master, so that every
    later highstate keeps it; check that the pillar now says so.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.record_primary airflow-server2 reason='orch.failover (planned)'
    """
    def action():
        cluster = _cluster()
        if node not in cluster.database_nodes():
            raise StepFailed(f"{node} is not a database node of the pillar")
        record = {
            "primary": node,
            "previous_primary": cluster.primary,
            "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "reason": reason,
        }
        path = _record_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".topology-")
        with os.fdopen(handle, "w") as stream:
            json.dump(record, stream)
            stream.write("\n")
        os.replace(temporary, path)
        seen = _cluster().primary
        if seen != node:
            raise StepFailed(f"wrote {path}, but the pillar still names {seen} as the primary: "
                             "check that pillar/top.sls includes topology")
        return {"record": path, "primary": node}

    return _step(f"record {node} as the primary", action,
                 f"write the record by hand: salt-run airflow_ha.record_primary {node} "
                 "reason=manual, then check salt-run airflow_ha.status")


# --- Status -------------------------------------------------------------------------


def status(as_text=None):
    """
    Show the cluster: each server's PostgreSQL role, timeline and lag, its
    Redis role and offset, the node the topology record names as primary, and
    Airflow's health through the load balancer. A text table, or data with
    ``--out=json`` (or ``as_text=False``).

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.status
        salt-run airflow_ha.status --out=json
    """
    cluster = _cluster()
    pg_nodes, redis_nodes = cluster.database_nodes(), cluster.with_role("redis")
    answering = _answering(sorted(set(pg_nodes) | set(redis_nodes)))
    pg_states = _statuses(sorted(answering & set(pg_nodes)), "pg_replication.status")
    redis_states = _statuses(sorted(answering & set(redis_nodes)), "redis_replication.status")
    lag_by_name = {entry["application_name"]: entry["lag_bytes"]
                   for state in pg_states.values() for entry in state.get("standbys", [])}
    for node, state in pg_states.items():
        if state.get("role") == "standby" and node in lag_by_name:
            state["lag_bytes"] = lag_by_name[node]
    url = cluster.health_url()
    health = _health(url) if url else None
    record = _read_record()
    data = {
        "nodes": {node: {"postgresql": pg_states.get(node), "redis": redis_states.get(node)}
                  for node in sorted(set(pg_nodes) | set(redis_nodes))},
        "primary": cluster.primary,
        "record": record,
        "record_path": _record_path(),
        "airflow_health_url": url,
        "airflow_health": health,
        "problems": topology_problems(cluster.primary, pg_states, redis_states,
                                      set(pg_nodes) - answering, cluster.address(cluster.primary)),
    }
    if as_text is None:
        as_text = __opts__.get("output") in (None, "nested", "txt", "highstate")
    if not as_text:
        return data
    rows = []
    for node, states in data["nodes"].items():
        pg_role, timeline, lag = _pg_cell(states["postgresql"])
        redis_role, offset = _redis_cell(states["redis"])
        rows.append({"node": node, "postgresql": pg_role, "timeline": timeline, "lag": lag,
                     "redis": redis_role, "offset": offset})
    record_text = (f"{record['primary']} since {record['recorded_at']} ({record['reason']}), "
                   f"in {data['record_path']}" if record else
                   f"none yet: the primary is cluster:primary, {cluster.preferred}")
    if health is None:
        airflow_text = "no haproxy node in the pillar"
    elif "error" in health:
        airflow_text = f"{url}: {health['error']}"
    else:
        airflow_text = f"{url}: " + (", ".join(airflow_health_problems(health)) or "healthy")
    text = status_table(rows, record_text, airflow_text)
    if data["problems"]:
        text += "\nproblems:\n" + "\n".join(f"  - {problem}" for problem in data["problems"])
    return text


# --- Pre-flight -----------------------------------------------------------------------


def _last_known_lsn(node):
    """The primary's WAL position the Salt mine last received from it."""
    mined = __salt__["mine.get"](node, "pg_replication.status", tgt_type="list").get(node) or {}
    if mined.get("role") == "primary":
        return mined.get("current_lsn"), mined.get("checked_at")
    return None, None


def plan(action="failover", force=False, switch_back=True, max_lag_bytes=None):
    """
    Inspect both servers, decide what the orchestration ``action``
    (``failover`` or ``failback``) will do and print it. Changes nothing.
    Returns ``mode`` (planned, unplanned, rejoin-only, nothing), ``old`` and
    ``new`` (the primary before and after), ``rejoin`` (the node to rejoin
    as a standby first, or None), ``refused`` (why it must not run, or
    None), ``at_risk``, ``down`` (nodes that did not answer: the steps do
    not wait for them), the database nodes' states, and the Airflow nodes.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.plan
        salt-run airflow_ha.plan action=failback
    """
    cluster = _cluster()
    _say(f"==> pre-flight ({action}): inspecting {', '.join(sorted(cluster.nodes))}")
    try:
        result = _plan(cluster, action, force, switch_back, max_lag_bytes)
    except StepFailed as error:
        result = {"action": action, "old": cluster.primary, "new": None, "mode": None,
                  "refused": f"the pre-flight could not inspect the cluster: {error}",
                  "down": [], "states": {}}
    _print_plan(result)
    return result


def _plan(cluster, action, force, switch_back, max_lag_bytes):
    old = cluster.primary
    if max_lag_bytes in (None, ""):  # "": pillar.get's default
        max_lag_bytes = (cluster.pillar.get("failover") or {}).get("max_lag_bytes",
                                                                   _MAX_LAG_BYTES)
    max_lag_bytes = int(max_lag_bytes)
    answering = _answering(cluster.nodes)
    problems = _pillar_problems(sorted(answering))
    if problems:
        return {"action": action, "old": old, "new": None, "mode": None, "refused": problems,
                "down": sorted(set(cluster.nodes) - answering), "states": {}}
    pg_states = _statuses(sorted(answering & set(cluster.database_nodes())),
                          "pg_replication.status")
    result = {"action": action, "old": old, "new": None, "rejoin": None, "refused": None,
              "at_risk": None, "mode": None, "force": bool(force),
              "down": sorted(set(cluster.nodes) - answering),
              "airflow_nodes": cluster.airflow_nodes(), "states": pg_states}
    if action == "failover":
        new = cluster.other(old)
        last_lsn, seen_at = _last_known_lsn(old)
        # A server that answers while its PostgreSQL is not a running primary
        # (it crashed, or was stopped) is failed over as if it were down.
        old_up = old in pg_states and pg_states[old].get("role") == "primary"
        decision = failover_decision(old, new, old_up, pg_states.get(new), force, last_lsn,
                                     seen_at, max_lag_bytes)
        result.update(decision, new=new, last_primary_lsn=last_lsn, last_seen_at=seen_at)
    else:
        new = cluster.preferred
        result["new"] = new
        if new == old:
            result["mode"] = "nothing"
        elif new not in answering:
            result["refused"] = (f"{new}, the preferred primary, does not answer: start it "
                                 "(its PostgreSQL comes up fenced), then run the failback again")
        elif old not in pg_states or pg_states[old].get("role") != "primary":
            result["refused"] = (f"{old}, the current primary, is not a running primary: "
                                 "fail over to it first, or check salt-run airflow_ha.status")
        else:
            following = (pg_states[new].get("standby_of") or {}).get("host")
            streaming = {entry["application_name"] for entry in pg_states[old].get("standbys", [])
                         if entry["state"] == "streaming"}
            if new not in streaming or following not in (old, cluster.address(old)):
                result["rejoin"] = new
            result["mode"] = "planned" if switch_back else "rejoin-only"
    return result


def _pillar_problems(nodes):
    """
    The pillar validation's message (salt/validate, which every highstate
    renders first) as the first answering node renders it, or None when the
    pillar is valid: a runbook must not act on a pillar the highstate
    refuses.
    """
    if not nodes:
        return None
    reply = _client().cmd(nodes[0], "state.show_sls", ["validate"], timeout=60, full_return=True)
    rendered = reply.get(nodes[0], {}).get("ret")
    if isinstance(rendered, dict):
        return None
    if not isinstance(rendered, list):
        raise StepFailed(f"{nodes[0]} did not render the pillar validation: {rendered}")
    text = " ".join(str(error) for error in rendered)
    message = text.partition("Jinja error: ")[2].partition("\nTraceback")[0].strip()
    return f"the pillar is invalid: {message or text}"


def _print_plan(result):
    if result["down"]:
        _say(f"    not answering: {', '.join(result['down'])}")
    for node, state in sorted(result["states"].items()):
        position = state.get("current_lsn") or state.get("received_lsn") or "-"
        _say(f"    {node}: PostgreSQL {state.get('role')}"
             f"{' (fenced)' if state.get('fenced') else ''}, timeline {state.get('timeline')}, "
             f"WAL {position}")
    if result.get("at_risk"):
        _say(f"    at risk: {result['at_risk']}")
    if result["refused"]:
        _say(f"    REFUSED: {result['refused']}")
        return
    if result["mode"] == "nothing":
        _say(f"    {result['old']} is already the primary: nothing to fail back")
        return
    if result.get("rejoin"):
        _say(f"    plan: rejoin {result['rejoin']} as a standby of {result['old']} "
             "(pg_rewind, or a base backup), Redis follows")
    if result["mode"] in ("planned", "unplanned"):
        _say(f"    plan: {result['mode']} switch of the PostgreSQL primary and Redis master from "
             f"{result['old']} to {result['new']}; Airflow on {', '.join(result['airflow_nodes'])} "
             "follows")


# --- Steps of the runbooks ------------------------------------------------------------


def stop_schedulers(down=None):
    """
    Stop the Airflow schedulers (every node with the airflow-scheduler role
    that answers, but those in ``down``), so that nothing schedules while
    the primaries move.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.stop_schedulers
    """
    def action():
        nodes = sorted(_answering(_cluster().with_role("airflow-scheduler"), down))
        for node in nodes:
            _call(node, "service.stop", "airflow-scheduler")
            if _call(node, "service.status", "airflow-scheduler"):
                raise StepFailed(f"airflow-scheduler still runs on {node}")
        return {"stopped on": ", ".join(nodes) or "no answering node"}

    return _step("stop the Airflow schedulers", action,
                 "start them again where the primary is: salt -G 'roles:airflow-scheduler' "
                 "service.start airflow-scheduler (or re-run the orchestration)")


def pg_shut_down_primary(node, reason):
    """
    Shut the PostgreSQL primary on ``node`` down cleanly (fast shutdown: it
    writes a final checkpoint and sends all WAL to its standbys first) and
    fence it, so that nothing starts it as a primary again; check that it is
    down and cleanly shut down, and report its last checkpoint.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_shut_down_primary airflow-server1 reason=switchover
    """
    def action():
        _call(node, "pg_replication.fence", reason=reason, timeout=_LONG_SECONDS)
        state = _call(node, "pg_replication.status")
        if state["running"] or state["cluster_state"] != "shut down":
            raise StepFailed(f"PostgreSQL on {node} is {state['cluster_state']} "
                             f"(running: {state['running']}), not cleanly shut down")
        return {"checkpoint": state["last_checkpoint_lsn"], "fenced": state["fenced"]}

    return _step(f"shut down the PostgreSQL primary on {node} (final checkpoint) and fence it",
                 action,
                 f"no node accepts writes now. Check {node} with salt {node} "
                 f"pg_replication.status. To make it the primary again, start its PostgreSQL "
                 f"(it comes up fenced, in recovery) and run salt {node} pg_replication.promote "
                 f"force=True, then salt-run airflow_ha.airflow_follow; or re-run the failover")


def pg_check_standby_caught_up(standby, old_primary, wait=30):
    """
    Check that ``standby`` has received the stopped old primary's WAL up to
    and including its shutdown checkpoint (waiting up to ``wait`` seconds):
    then promoting it loses no committed transaction.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_check_standby_caught_up airflow-server2 airflow-server1
    """
    def action():
        checkpoint = _call(old_primary, "pg_replication.status")["last_checkpoint_lsn"]

        def caught_up():
            state = _call(standby, "pg_replication.status")
            return state if received_everything(checkpoint, state.get("received_lsn")) else None

        state = _wait(caught_up, wait, f"{standby} receiving WAL up to {checkpoint}")
        return {"old primary's checkpoint": checkpoint, "received": state["received_lsn"]}

    return _step(f"check that {standby} received every WAL record of {old_primary}", action,
                 f"{old_primary} is shut down and fenced, {standby} is still a standby: nothing "
                 f"is lost yet. Check replication with salt-run airflow_ha.status; to go back, "
                 f"start {old_primary} as the primary (see pg_replication.fence)")


def pg_promote(node, old_primary, planned=True):
    """
    Promote the standby on ``node``. When planned, check that its new
    timeline begins after ``old_primary``'s shutdown checkpoint (it replayed
    everything); either way, check that it accepts writes.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_promote airflow-server2 airflow-server1
    """
    def action():
        checkpoint = (_call(old_primary, "pg_replication.status")["last_checkpoint_lsn"]
                      if planned else None)
        promoted = _call(node, "pg_replication.promote", force=not planned, timeout=_LONG_SECONDS)
        if planned and not switch_proves_no_loss(checkpoint, promoted["switch_lsn"]):
            raise StepFailed(f"the new timeline {promoted['timeline']} begins at "
                             f"{promoted['switch_lsn']}, not after {old_primary}'s checkpoint "
                             f"{checkpoint}")
        state = _call(node, "pg_replication.status")
        if state["role"] != "primary":
            raise StepFailed(f"{node} is {state['role']} after its promotion")
        verified = {"timeline": promoted["timeline"], "switch": promoted["switch_lsn"],
                    "writable after": f"{promoted['seconds']} s"}
        if planned:
            verified["old checkpoint"] = checkpoint
        return verified

    return _step(f"promote PostgreSQL on {node}", action,
                 f"check {node} with salt {node} pg_replication.status; if it is a primary now, "
                 f"continue with salt-run airflow_ha.record_primary {node} and re-run the "
                 "orchestration's remaining steps; if it is still a standby, retry the failover")


def redis_switch(node, old_master, planned=True):
    """
    Make Redis on ``node`` the master. Planned: FAILOVER on the old master
    (it pauses writes, waits until ``node`` has every write it acknowledged,
    then follows it), and the old master's role file is saved. Unplanned:
    ``node`` stops following the unreachable old master.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.redis_switch airflow-server2 airflow-server1
    """
    def action():
        promoted = _call(node, "redis_replication.promote", force=not planned,
                         timeout=_LONG_SECONDS)
        state = _call(node, "redis_replication.status")
        if state["role"] != "master":
            raise StepFailed(f"Redis on {node} is {state['role']} after its promotion")
        verified = {"method": promoted["method"], "offset": promoted["offset"]}
        if planned:
            saved = _call(old_master, "redis_replication.save_role")
            old = _call(old_master, "redis_replication.status")
            if old["role"] != "replica" or old["master_link_status"] != "up":
                raise StepFailed(f"Redis on {old_master} is {old['role']} with link "
                                 f"{old.get('master_link_status')}, not a replica of {node}")
            verified["old master"] = f"replica ({saved['role']} saved)"
        return verified

    return _step(f"make Redis on {node} the master", action,
                 f"check both with salt 'airflow-server*' redis_replication.status; if the "
                 f"failover aborted, {old_master} is still the master and nothing was lost: "
                 "retry the orchestration")


def airflow_follow(wait=300, down=None):
    """
    Point Airflow at the recorded primary: apply the ``airflow.config`` state
    on every Airflow node that answers (new ``sql_alchemy_conn``,
    ``result_backend`` and ``broker_url``), then restart in the order that
    keeps downtime short: schedulers, Flowers and triggerers, Celery workers
    (a warm shutdown: running tasks finish first, without holding up this
    step), and the webservers one at a time, each back before the next, so
    the load balancer always has one. Checks Airflow's health through the
    load balancer. Nodes in ``down`` are skipped: they get the new
    configuration from their highstate when they return.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.airflow_follow
    """
    def action():
        cluster = _cluster()
        nodes = sorted(_answering(cluster.airflow_nodes(), down))
        replies = _client().cmd(nodes, "state.sls", ["airflow.config"], tgt_type="list",
                                timeout=_LONG_SECONDS)
        for node in nodes:
            reply = replies.get(node)
            if not isinstance(reply, dict):
                raise StepFailed(f"airflow.config on {node}: {reply}")
            failed = [r.get("comment") for r in reply.values() if r.get("result") is False]
            if failed:
                raise StepFailed(f"airflow.config on {node} failed: {failed}")
        restarted = []
        # Each role's unit is named after it.
        for role, no_block in (("airflow-scheduler", False), ("airflow-flower", False),
                               ("airflow-triggerer", False), ("airflow-worker", True)):
            for node in sorted(set(cluster.with_role(role)) & set(nodes)):
                _call(node, "service.restart", role, no_block=no_block)
                restarted.append(f"{role}@{node}")
        for node in sorted(set(cluster.with_role("airflow-webserver")) & set(nodes)):
            _call(node, "service.restart", "airflow-webserver")
            _wait_healthy(cluster.webserver_health_url(node), wait, f"a healthy webserver on {node}")
            restarted.append(f"airflow-webserver@{node}")
        url = cluster.health_url()
        if url:
            _wait_healthy(url, wait, "Airflow healthy through the load balancer")
        return {"restarted": ", ".join(restarted), "healthy": url or "no load balancer"}

    return _step("point Airflow at the new primaries and restart it", action,
                 "the data tier has switched; apply the states again: salt '*' state.apply, "
                 "then check salt-run airflow_ha.status")


def pg_rejoin(node, primary):
    """
    Make PostgreSQL on ``node`` a streaming standby of ``primary`` unless it
    already is one: stop and fence it, then pg_replication.rejoin (nothing to
    copy when it was shut down cleanly before the switch, pg_rewind when it
    diverged, a base backup when rewinding is impossible). Checks that the
    primary shows it streaming.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.pg_rejoin airflow-server1 airflow-server2
    """
    def action():
        state = _call(node, "pg_replication.status")
        primary_state = _call(primary, "pg_replication.status")
        if _streams_from(node, state, primary_state) and not state["fenced"]:
            return {"already": f"streaming from {primary}"}
        _call(node, "pg_replication.fence", reason=f"rejoining {primary} as a standby",
              timeout=_LONG_SECONDS)
        rejoined = _call(node, "pg_replication.rejoin", primary=primary, timeout=_LONG_SECONDS)
        if not _streams_from(node, _call(node, "pg_replication.status"),
                             _call(primary, "pg_replication.status")):
            raise StepFailed(f"{node} does not stream from {primary} after its rejoin")
        verified = {"method": rejoined["method"], "rejoin": f"{rejoined['seconds']} s",
                    "timeline": rejoined["timeline"]}
        if "rewind_error" in rejoined:
            verified["rewind failed"] = rejoined["rewind_error"]
        return verified

    return _step(f"rejoin PostgreSQL on {node} as a standby of {primary}", action,
                 f"{primary} is the primary and serves Airflow; {node} stays fenced (it cannot "
                 f"start as a primary). Fix the cause shown above, then run "
                 f"salt-run state.orchestrate orch.failback pillar='{{\"switch_back\": false}}'")


def _streams_from(node, state, primary_state):
    streaming = {entry["application_name"] for entry in primary_state.get("standbys", [])
                 if entry["state"] == "streaming"}
    return state.get("role") == "standby" and node in streaming


def redis_follow(node, master):
    """
    Make Redis on ``node`` a replica of ``master`` (unless it already is one
    with its link up) and save that role, so a restart keeps it.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.redis_follow airflow-server1 airflow-server2
    """
    def action():
        address = _cluster().address(master)
        followed = _call(node, "redis_replication.replicate_from", address, timeout=_LONG_SECONDS)
        if followed["role"] != "replica" or followed["master_link_status"] != "up":
            raise StepFailed(f"Redis on {node} does not follow {master} with its link up")
        return {"replica of": master, "changed": followed["changed"]}

    return _step(f"make Redis on {node} a replica of {master}", action,
                 f"{master} is the Redis master and serves Airflow; check {node} with "
                 f"salt {node} redis_replication.status and retry: "
                 f"salt {node} redis_replication.replicate_from ADDRESS-OF-{master}")


def fence_unreachable(node, primary):
    """
    Report how the unreachable former primary on ``node`` is kept from
    coming back as a second primary: its PostgreSQL's start guard (installed
    by the postgresql state) finds ``primary`` writable and starts it fenced,
    in recovery; its Redis start guard makes it a replica of ``primary``.
    Checks that the guard is in place on the new primary's side (the same
    states), since ``node`` cannot be asked.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.fence_unreachable airflow-server1 airflow-server2
    """
    def action():
        if node in _answering([node]):
            _call(node, "pg_replication.fence", reason=f"failed over to {primary}")
            return {"fenced": f"{node} answers again: fenced now"}
        guard = _call(primary, "file.file_exists", "/usr/local/sbin/postgresql-start-guard")
        if not guard:
            raise StepFailed(f"the start guard is missing on {primary}: apply the highstate "
                             f"before {node} comes back")
        return {"fenced": f"{node} is down; when it boots, its start guard finds {primary} "
                          "writable and keeps its PostgreSQL in recovery (fenced) and its Redis a "
                          "replica; then run orch.failback"}

    return _step(f"fence {node}, the former primary", action,
                 f"keep {node} powered off until you can run orch.failback")


def verify(wait=120, down=None):
    """
    Check the end state of a runbook: exactly one writable PostgreSQL and
    one Redis master, both on the recorded primary; every other answering
    database node streaming from it; Airflow healthy through the load
    balancer. Nodes that do not answer are reported, not waited for; nodes
    in ``down`` are not asked.

    CLI Example:

    .. code-block:: bash

        salt-run airflow_ha.verify
    """
    def action():
        cluster = _cluster()
        nodes = sorted(set(cluster.database_nodes()) | set(cluster.with_role("redis")))
        answering = _answering(nodes, down)

        def problems():
            pg_states = _statuses(sorted(answering & set(cluster.database_nodes())),
                                  "pg_replication.status")
            redis_states = _statuses(sorted(answering & set(cluster.with_role("redis"))),
                                     "redis_replication.status")
            return topology_problems(cluster.primary, pg_states, redis_states,
                                     set(nodes) - answering, cluster.address(cluster.primary))

        _wait_without_problems(problems, wait, "the expected topology")
        url = cluster.health_url()
        if url:
            _wait_healthy(url, wait, "Airflow healthy through the load balancer")
        verified = {"primary": cluster.primary, "airflow": "healthy" if url else "not checked"}
        if set(nodes) - answering:
            verified["down"] = ", ".join(sorted(set(nodes) - answering))
        return verified

    return _step("verify: one primary, one master, standbys streaming, Airflow healthy", action,
                 "read salt-run airflow_ha.status; the README's operator section says what "
                 "to do for each problem listed")

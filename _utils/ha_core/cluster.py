"""
The cluster as the pillar describes it, and the topology record.

The pillar names the nodes (``cluster:nodes:<minion id>: {address, roles}``)
and the preferred primary (``cluster:primary``). The topology record, a JSON
file on the master at the path of the master option ``RECORD_OPTION``, names
the node that is the PostgreSQL primary and the Redis master now: the
runbooks write it (``salt-run airflow_ha.record_primary``), the pillar serves
it as ``topology`` (``pillar/topology.sls``), and the current primary is the
record's, or the preferred primary before any failover. Nodes are named by
minion id in every decision; ``address`` is the one place that turns a name
into an address.
"""

import copy
import datetime
import json
import os
import tempfile

from ha_core.errors import InvalidInput, Refused

# The master option naming the topology record's file.
RECORD_OPTION = "airflow_topology_record"


def record_path(opts):
    """
    Return the topology record's path from the master's options;
    InvalidInput naming the fix when the option is not set.
    """
    path = opts.get(RECORD_OPTION)
    if not path:
        raise InvalidInput(
            f"{RECORD_OPTION} is not set in the master configuration",
            fix=f"add `{RECORD_OPTION}: /var/lib/airflow-ha/topology.json` (an absolute path "
                "outside git that survives master restarts) to etc/salt/master.d/site.conf")
    return path


def read_record(path):
    """Return the topology record at path, or None when there is none yet."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None


def generation(record):
    """A record's generation: 0 for none (the preferred primary, before any
    failover), then one more at every record_primary."""
    return int((record or {}).get("generation") or 0)


def new_record(primary, previous_primary, reason, known_records=(), now=None, fenced=()):
    """
    Return the record naming ``primary`` as the primary now, one generation
    past every record in ``known_records`` (the master's, and the copies
    the database nodes keep); ``fenced``: the nodes the run proved fenced
    (a node that does not answer later is no problem when it is one).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return {"primary": primary, "previous_primary": previous_primary,
            "recorded_at": now.isoformat(timespec="seconds"), "reason": reason,
            "generation": max([generation(record) for record in known_records] or [0]) + 1,
            "fenced": sorted(fenced)}


def record_text(record):
    """The text of a record's file, on the master and in every node's copy:
    the same bytes for the same record, so that rewriting it changes nothing."""
    # As Salt's json filter writes it in the highstate's copy.
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


def write_record(path, record):
    """Replace the topology record at path atomically (a reader sees the old
    record or the new one, never a part)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".topology-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(record_text(record))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def merge(base, override):
    """
    Return ``base`` with ``override`` merged in recursively (dicts merge,
    anything else replaces), as Salt's ``pillar.get(merge=True)`` does over
    the defaults in ``salt/settings.jinja``.
    """
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def component_settings(component, defaults, os_family_values, pillar, versionmap=None):
    """
    Return a component's settings as ``salt/settings.jinja`` makes them:
    its ``defaults.yaml``, then its OS family's values, then the pillar key
    named after it; over the values of its version's release line when it
    has a ``versionmap.yaml`` (as ``salt/airflow/map.jinja`` does).
    """
    settings = merge(merge(defaults, os_family_values), pillar.get(component))
    if not versionmap:
        return settings
    line = str(settings["version"]).split(".")[0]
    if line not in versionmap:
        raise InvalidInput(f"{component}:version {settings['version']}: no release line {line} "
                           f"in salt/{component}/versionmap.yaml",
                           fix=f"use a version of a supported line: {', '.join(sorted(versionmap))}")
    return dict(merge(versionmap[line], settings), release_line=int(line))


def airflow_units(settings, role, on_primary):
    """
    The systemd units of an Airflow role (airflow settings: its release
    line's ``components``) on a node: every component's, but a single one
    (Airflow 3's DAG processor) only on the node holding the primaries.
    """
    return [f"airflow-{component['name']}" for component in settings["components"].get(role, [])
            if on_primary or not component.get("single")]


class Cluster:
    """
    The nodes of the pillar, the preferred primary and the current one.

    pillar
        The environment's pillar (``cluster`` and, after a failover,
        ``topology``).
    """

    def __init__(self, pillar):
        cluster = pillar.get("cluster") or {}
        self.pillar = pillar
        self.nodes = cluster.get("nodes") or {}
        self.preferred = cluster.get("primary")
        self.primary = (pillar.get("topology") or {}).get("primary") or self.preferred

    def address(self, node):
        """The address of a node of the pillar; InvalidInput for another name."""
        try:
            return self.nodes[node]["address"]
        except KeyError:
            raise InvalidInput(f"{node!r} is not a node of the pillar",
                               fix=f"name one of {', '.join(sorted(self.nodes))}") from None

    def with_role(self, *roles):
        """The nodes that have any of ``roles``, sorted."""
        return sorted(name for name, node in self.nodes.items()
                      if set(roles) & set(node.get("roles", [])))

    def database_nodes(self):
        return self.with_role("postgresql")

    def redis_nodes(self):
        return self.with_role("redis")

    def airflow_nodes(self):
        return sorted(name for name, node in self.nodes.items()
                      if any(role.startswith("airflow-") for role in node.get("roles", [])))

    def other(self, node):
        """The one database node that is not ``node``; Refused unless there
        are exactly two."""
        others = [name for name in self.database_nodes() if name != node]
        if len(others) != 1:
            raise Refused(f"failover needs exactly two database nodes; the pillar has "
                          f"{', '.join(self.database_nodes())}")
        return others[0]

    def health_url(self, haproxy_settings, airflow_settings):
        """Airflow's health endpoint through the first load balancer, or None."""
        balancers = self.with_role("haproxy")
        if not balancers:
            return None
        return (f"https://{self.address(balancers[0])}:"
                f"{haproxy_settings['airflow_tls_port']}{airflow_settings['health_path']}")

    def monitoring_urls(self, monitoring_settings):
        """{"prometheus": URL, "alertmanager": URL} on the monitoring node,
        and "overview": its page through the first load balancer; None when
        no node has the monitoring role."""
        servers = self.with_role("monitoring")
        if not servers:
            return None
        ports = monitoring_settings["ports"]

        def host(node):
            address = self.address(node)
            return f"[{address}]" if ":" in address else address

        urls = {name: f"http://{host(servers[0])}:{ports[name]}"
                for name in ("prometheus", "alertmanager")}
        balancers = self.with_role("haproxy")
        if balancers:
            urls["overview"] = f"https://{host(balancers[0])}:{ports['overview']}/"
        return urls

    def webserver_health_url(self, node, airflow_settings):
        """Airflow's health endpoint on one webserver (or API server)."""
        return (f"http://{self.address(node)}:{airflow_settings['webserver']['port']}"
                f"{airflow_settings['health_path']}")

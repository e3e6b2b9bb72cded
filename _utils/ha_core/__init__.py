"""
The core of the highly available pair: facts, rules and decisions, as plain
Python with no Salt import, one module per concern.

- ``errors``: the kinds of failure, and how Salt-side code reports them.
- ``addresses``: ``HOST``, ``HOST:PORT`` and ``[IPV6]:PORT``.
- ``pg_facts``: what PostgreSQL says, parsed (LSNs, timeline history,
  ``pg_controldata``, process titles, conninfo).
- ``pg_datadir``: a data directory's files (fence marker, release, standby
  configuration, kept WAL) and its server's processes.
- ``pg_commands``: PostgreSQL's command lines and the SQL sent to it.
- ``pg_decisions``: a server's role, whether it may be promoted, how it
  rejoins and what that would discard, what the standby state does.
- ``redis_facts``: what Redis' configuration, role file and INFO say.
- ``redis_decisions``: how a replica is promoted, which FAILOVER to send.
- ``cluster``: the cluster as the pillar describes it, the topology
  record, and the settings merge of ``salt/settings.jinja``.
- ``failover``: the runbooks' plan, whether a switch lost nothing, the
  topology's problems, Airflow's health.
- ``runbook``: each runbook step's title, advice and checks.
- ``report``: ``salt-run airflow_ha.status`` and the pre-flight as text.
- ``probes``: waiting for a condition; reading Airflow's ``/health``.
- ``guard``: what a start guard does, and the guard programs themselves.
- ``peer``: the signed report a database node gives the other's guards.

Why a package in ``_utils/``: ``saltutil.sync_all`` (which every highstate
runs) ships it to the minions, the master finds it through ``utils_dirs``,
and Salt's loader puts the utils directories on ``sys.path`` while it loads
execution modules, states and runners, so they ``import ha_core`` as plain
Python; the start guards, which run before the minion, get a copy installed
beside them by the same state; and the unit tests import it directly.
Everything here takes its facts as arguments: the execution modules, states,
runner (with ``_utils/ha_nodes.py``, its Salt client) and guards do the I/O
around it.
"""

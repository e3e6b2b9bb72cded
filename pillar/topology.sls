{#- The topology record: the node that is the PostgreSQL primary and the
    Redis master now, written on the master by orch.failover and
    orch.failback (salt-run airflow_ha.record_primary) to the file named by
    the master option `airflow_topology_record` (outside git), which the
    runner reads too (ha_core.cluster.record_path). The states take the
    primary from `topology:primary` when it is set, from `cluster:primary`
    (the preferred primary) otherwise, so a highstate keeps what a failover
    did. `salt-run airflow_ha.topology` shows it. #}
{%- set record = opts.get('airflow_topology_record') %}
{%- if not record %}
{{ raise("airflow_topology_record is not set in the master configuration: add `airflow_topology_record: /var/lib/airflow-ha/topology.json` (an absolute path outside git that survives master restarts) to etc/salt/master.d/site.conf") }}
{%- endif %}
{%- if salt['file.file_exists'](record) %}
topology: {{ salt['file.read'](record) | load_json | json }}
{%- endif %}

{#- The topology record: the node that is the PostgreSQL primary and the
    Redis master now, written on the master by orch.failover and
    orch.failback (salt-run airflow_ha.record_primary) to
    <root_dir>/var/lib/airflow-ha/topology-<environment>.json, outside git.
    The states take the primary from `topology:primary` when it is set, from
    `cluster:primary` (the preferred primary) otherwise, so a highstate
    keeps what a failover did. `salt-run airflow_ha.topology` shows it. #}
{%- set record = opts.root_dir ~ '/var/lib/airflow-ha/topology-' ~ opts.airflow_environment ~ '.json' %}
{%- if salt['file.file_exists'](record) %}
topology: {{ salt['file.read'](record) | load_json | json }}
{%- endif %}

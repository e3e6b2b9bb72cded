{#- Every minion gets the pillar of the one environment this master serves.
    The environment is named by `airflow_environment` in the master
    configuration (etc/salt/master.d/*.conf), not by minion ids: the lab and
    production use the same node names. Then, for every environment alike,
    the topology record: which node is the primary now. #}
{%- set environment = opts.get('airflow_environment') %}
{%- if not environment %}
{{ raise("airflow_environment is not set in the master configuration: add `airflow_environment: NAME` to etc/salt/master.d/site.conf, where NAME is a folder under pillar/ (for example lab)") }}
{%- endif %}
base:
  '*':
    - {{ environment }}
    - topology

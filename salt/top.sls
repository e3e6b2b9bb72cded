{#- The one place that decides what each role runs. A node's roles come from
    the pillar (cluster:nodes:<minion id>:roles); every node also gets the
    common state. Roles whose list is empty are known and accepted; their
    states arrive with the tiers that build them. #}
{%- set states_by_role = {
    'postgresql': ['postgresql'],
    'redis': ['redis'],
    'airflow-webserver': ['airflow'],
    'airflow-scheduler': ['airflow'],
    'airflow-triggerer': ['airflow'],
    'airflow-flower': ['airflow'],
    'airflow-worker': ['airflow'],
    'haproxy': ['haproxy'],
} %}
{%- set node_key = 'cluster:nodes:' ~ opts.id %}
{%- set roles = salt['pillar.get'](node_key ~ ':roles', []) %}
{%- set unknown = roles | reject('in', states_by_role) | list %}
{%- if unknown %}
{{ raise("pillar " ~ node_key ~ ":roles has unknown role(s) " ~ unknown | join(', ') ~ "; known roles are " ~ states_by_role | sort | join(', ')) }}
{%- endif %}
{%- set states = [] %}
{%- for role in roles %}
{%-   for state in states_by_role[role] if state not in states %}
{%-     do states.append(state) %}
{%-   endfor %}
{%- endfor %}
base:
  '{{ opts.id }}':
    - common
{%- for state in states %}
    - {{ state }}
{%- endfor %}

{#- Role-to-state mapping: every node gets `validate` (the pillar's checks,
    which stop the whole run before anything changes when the pillar is
    wrong) and `common`, then the exporters when the environment has a
    monitoring node, then the states of its roles, as salt/roles.yaml maps
    them. #}
{%- import_yaml 'roles.yaml' as states_by_role %}
{%- set roles = salt['pillar.get']('cluster:nodes:' ~ opts.id ~ ':roles', []) %}
{%- set states = [] %}
{#- While a node has the monitoring role, every node runs the exporters. #}
{%- for node in salt['pillar.get']('cluster:nodes', {}).values()
      if 'monitoring' in node.get('roles', []) and 'monitoring.exporters' not in states %}
{%-   do states.append('monitoring.exporters') %}
{%- endfor %}
{%- for role in roles if role in states_by_role %}
{%-   for state in states_by_role[role] if state not in states %}
{%-     do states.append(state) %}
{%-   endfor %}
{%- endfor %}
base:
  '{{ opts.id }}':
    - validate
    - common
{%- for state in states %}
    - {{ state }}
{%- endfor %}

{#- This node's copy of the topology record: the master's record, or before
    any failover the preferred primary at generation 0. The validation
    (salt/validate) has refused a master record older than this copy
    before anything got here. #}
{%- from 'common/map.jinja' import common %}
{%- set record = salt['pillar.get']('topology') or {'primary': salt['pillar.get']('cluster:primary'), 'generation': 0} %}
common-topology-record-copy:
  file.managed:
    - name: {{ common.topology_record_copy }}
    - contents: {{ record | json | json }}
    - makedirs: true
    - mode: '0644'

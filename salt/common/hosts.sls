{#- Every node resolves every cluster name to its cluster address, without
    depending on DNS. #}
{%- for name, node in salt['pillar.get']('cluster:nodes', {}) | dictsort %}
common-hosts-{{ name }}:
  host.present:
    - name: {{ name }}
    - ip: {{ node.address }}
    - clean: true
{%- endfor %}

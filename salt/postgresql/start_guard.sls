{#- Before PostgreSQL starts: if it would start as a primary while another
    database node already is a writable primary, start it fenced, in
    recovery (salt/start_guard). That is how a former primary that was
    failed over while it was down comes back without making two primaries. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'start_guard/unit.jinja' import start_guard_unit %}
{%- set peers = [] %}
{%- for name in postgresql.database_nodes if name != grains.id %}
{%-   do peers.append(postgresql.nodes[name].address ~ ':' ~ postgresql.port) %}
{%- endfor %}
include:
  - start_guard
  - postgresql.install
  - postgresql.module_settings

{{ start_guard_unit('postgresql', postgresql.service,
               [postgresql.data_dir, postgresql.bin_dir ~ '/psql', postgresql.passfile,
                postgresql.replication_user] + peers) }}

{#- Before PostgreSQL starts: if it would start as a primary while another
    database node already is a writable primary, start it fenced, in
    recovery (files/start-guard.py). That is how a former primary that was
    failed over while it was down comes back without making two primaries. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'start_guard.jinja' import start_guard %}
{%- set peers = [] %}
{%- for name in postgresql.database_nodes if name != grains.id %}
{%-   do peers.append(postgresql.nodes[name].address ~ ':' ~ postgresql.port) %}
{%- endfor %}
include:
  - postgresql.install
  - postgresql.module_settings

{{ start_guard('postgresql', postgresql.service,
               [postgresql.data_dir, postgresql.bin_dir ~ '/psql', postgresql.passfile,
                postgresql.replication_user] + peers) }}

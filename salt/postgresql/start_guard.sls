{#- Before PostgreSQL starts: a node that would start as the primary does
    so only with positive evidence that it is the primary now; otherwise it
    starts fenced, in recovery (salt/start_guard, ha_core.guard). That is
    how a former primary that was failed over while it was down, or cut
    off, comes back without making two primaries. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'start_guard/unit.jinja' import start_guard_unit %}
include:
  - start_guard
  - postgresql.install
  - postgresql.module_settings

{{ start_guard_unit('postgresql', postgresql.service, ['--data-dir', postgresql.data_dir]) }}

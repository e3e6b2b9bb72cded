{#- PostgreSQL with streaming replication. The primary (see salt/settings.jinja)
    holds the Airflow database and the roles; every other node with the
    postgresql role is built as its standby once, and left alone after. #}
{%- from 'postgresql/map.jinja' import postgresql %}
include:
  - postgresql.install
  - postgresql.config
  - postgresql.service
  - postgresql.module_settings
  - postgresql.mine
{%- if grains.id == postgresql.primary %}
  - postgresql.primary
{%- else %}
  - postgresql.standby
{%- endif %}
  {#- Last: on a fresh environment the other node cannot report yet. #}
  - postgresql.start_guard

{#- On every other database node: a streaming standby of the primary, built
    once by base backup (or rewind) and never touched again while it follows
    the primary. On a fresh environment the primary may still be coming up:
    retry for a few minutes before giving up. #}
{%- from 'postgresql/map.jinja' import postgresql %}
include:
  - postgresql.service
  - postgresql.module_settings

postgresql-standby:
  pg_replication.standby:
    - primary: {{ postgresql.primary }}
    - primary_address: {{ postgresql.nodes[postgresql.primary].address }}
    - database: {{ postgresql.database }}
    - retry:
        attempts: 30
        interval: 10
    - require:
      - service: postgresql-service
      - grains: postgresql-module-settings
      - file: postgresql-passfile

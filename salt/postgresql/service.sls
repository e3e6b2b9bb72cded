{%- from 'postgresql/map.jinja' import postgresql %}
include:
  - postgresql.config
  - postgresql.unit

{#- Settings such as wal_level and listen_addresses take a restart;
    pg_hba.conf takes a reload. #}
postgresql-service:
  service.running:
    - name: {{ postgresql.service }}
    - enable: true
    - require:
      - sls: postgresql.unit
    - watch:
      - file: postgresql-settings
      - file: postgresql-settings-included

postgresql-reload-hba:
  module.run:
    - service.reload:
      - name: {{ postgresql.service }}
    - onchanges:
      - file: postgresql-hba
    - require:
      - service: postgresql-service

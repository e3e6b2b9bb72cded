{#- pgBackRest's configuration file and its TLS server (the package's
    pgbackrest unit), restarted when either changes. #}
{%- from 'pgbackrest/map.jinja' import pgbackrest, pgbackrest_public %}
include:
  - pgbackrest.tls

pgbackrest-config:
  file.managed:
    - name: {{ pgbackrest.config_file }}
    - source: salt://pgbackrest/files/pgbackrest.conf.jinja
    - template: jinja
    - context:
        pgbackrest: {{ pgbackrest_public | json }}
        repository: {{ grains.id == pgbackrest.repository_node }}
    - makedirs: true
    - user: {{ pgbackrest.os_user }}
    - group: {{ pgbackrest.os_user }}
    - mode: '0640'
    - require:
      - pkg: pgbackrest-package

pgbackrest-service:
  service.running:
    - name: {{ pgbackrest.service }}
    - enable: true
    - watch:
      - file: pgbackrest-config
      - file: pgbackrest-tls-ca
      - file: pgbackrest-tls-certificate
      - file: pgbackrest-tls-key

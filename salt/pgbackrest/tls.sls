{#- This node's pgBackRest TLS files from the pillar (pgbackrest:tls): the
    certificate authority both ends trust, and the node's certificate and
    key, which it serves and presents as a client. Salt reads them from the
    pillar on the node (contents_pillar), so they are neither in the state's
    arguments nor in its change output; only the pgBackRest user reads the
    key. #}
{%- from 'pgbackrest/map.jinja' import pgbackrest %}
include:
  - pgbackrest.install

{%- for id, file, key, mode in [
      ('pgbackrest-tls-ca', pgbackrest.tls_files.ca, 'pgbackrest:tls:ca_certificate', '0644'),
      ('pgbackrest-tls-certificate', pgbackrest.tls_files.certificate, 'pgbackrest:tls:nodes:' ~ grains.id ~ ':certificate', '0644'),
      ('pgbackrest-tls-key', pgbackrest.tls_files.key, 'pgbackrest:tls:nodes:' ~ grains.id ~ ':key', '0600')] %}

{{ id }}:
  file.managed:
    - name: {{ file }}
    - contents_pillar: {{ key }}
    - makedirs: true
    - user: {{ pgbackrest.os_user }}
    - group: {{ pgbackrest.os_user }}
    - mode: '{{ mode }}'
    - show_changes: false
    - require:
      - pkg: pgbackrest-package
{%- endfor %}
